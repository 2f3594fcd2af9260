//! `cloudctl image list|get|create|delete`.

use clap::{Subcommand, ValueEnum};
use cloudctl::client::{ImageFromSnapshotParams, ImageRegisterParams, list_all};

use super::Context;

/// Image verbs.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List the images the project can boot (its own and the public ones).
    List,
    /// Show one image.
    Get { image: String },
    /// Register an image from files on the control plane host (operators), or make one of a
    /// snapshot's root disk (`--from-snapshot`, members).
    Create {
        /// DNS label, unique among the project's (or the public) images.
        name: String,
        /// Make it of this snapshot's root disk, booting like the snapshotted instance's image.
        #[arg(long, value_name = "SNAPSHOT", conflicts_with_all = ["kernel", "initrd", "disk", "public", "firmware"])]
        from_snapshot: Option<String>,
        /// How it boots.
        #[arg(long, value_enum, default_value = "direct-kernel")]
        boot_mode: BootMode,
        /// Absolute path of the kernel on the control plane host (direct-kernel).
        #[arg(long, value_name = "PATH")]
        kernel: Option<String>,
        /// Absolute path of the initramfs on the control plane host (direct-kernel).
        #[arg(long, value_name = "PATH")]
        initrd: Option<String>,
        /// Absolute path of the disk image (raw or qcow2) on the control plane host.
        #[arg(long, value_name = "PATH")]
        disk: Option<String>,
        /// Kernel command line (direct-kernel).
        #[arg(long, default_value = "")]
        cmdline: String,
        /// Firmware of a whole-disk image (firmware boot) [default: uefi].
        #[arg(long, value_enum)]
        firmware: Option<Firmware>,
        /// Visible to every project.
        #[arg(long)]
        public: bool,
    },
    /// Delete an image (refused while an instance uses it).
    Delete { image: String },
}

/// Firmware of a whole-disk image.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Firmware {
    /// UEFI (OVMF): a GPT disk with an EFI system partition.
    Uefi,
    /// Legacy BIOS (SeaBIOS): a disk with an MBR boot loader.
    Bios,
}

/// How an image boots.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BootMode {
    /// The VMM loads the kernel (and initrd) itself.
    DirectKernel,
    /// Firmware boots a whole-disk image.
    Firmware,
}

/// Runs an image command.
pub async fn run(ctx: &Context, cmd: ImageCommand) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let project = ctx.project.as_str();
    match cmd {
        ImageCommand::List => ctx.print_list(&list_all(|c| client.image_list(project, c)).await?),
        ImageCommand::Get { image } => ctx.print_one(&client.image_get(project, &image).await?),
        ImageCommand::Create { name, from_snapshot: Some(snapshot), .. } => {
            let params = ImageFromSnapshotParams { name };
            ctx.print_one(&client.image_from_snapshot(project, &snapshot, &params).await?)
        }
        ImageCommand::Create {
            name,
            from_snapshot: None,
            boot_mode,
            kernel,
            initrd,
            disk,
            cmdline,
            firmware,
            public,
        } => {
            let boot_mode = match boot_mode {
                BootMode::DirectKernel => "direct_kernel",
                BootMode::Firmware => "firmware",
            };
            let params = ImageRegisterParams {
                name,
                boot_mode: boot_mode.into(),
                kernel_path: kernel,
                initrd_path: initrd,
                disk_path: disk,
                kernel_cmdline: cmdline,
                firmware: firmware.map(|f| match f {
                    Firmware::Uefi => "uefi".to_owned(),
                    Firmware::Bios => "bios".to_owned(),
                }),
                public,
            };
            ctx.print_one(&client.image_register(project, &params).await?)
        }
        ImageCommand::Delete { image } => {
            let found = client.image_get(project, &image).await?;
            client.image_delete(project, &found.id.to_string()).await?;
            ctx.print_one(&found)
        }
    }
}
