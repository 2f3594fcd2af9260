//! Everything about one VM on one host: the VM spec, launching QEMU, its QMP control protocol,
//! the serial console, pause/resume, snapshot/restore and the NoCloud config drive.
#![forbid(unsafe_code)]
