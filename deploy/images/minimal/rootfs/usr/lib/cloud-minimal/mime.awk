# mime.awk: split a MIME multipart user-data (cloud-init's "mime-multi", as the vmm crate writes
# it when the caller has user-data of its own) into its text/cloud-config parts, in order:
# OUT.001, OUT.002, ... (bodies only). Runs under busybox awk: awk -v out=OUT -f mime.awk FILE
# Parts in base64 or of other types (shell scripts, boothooks, includes) are skipped.
BEGIN { state = "top"; n = 0; b = "" }
{ sub(/\r$/, "") }
state == "top" {
	if (b == "" && tolower($0) ~ /boundary=/) {
		# the first "boundary=" (the boundary string itself may contain that word)
		s = substr($0, index(tolower($0), "boundary=") + 9)
		if (s ~ /^"/) { s = substr(s, 2); sub(/".*/, "", s) } else sub(/[ \t;].*/, "", s)
		b = s
	}
	if (b != "" && $0 == "--" b) { state = "head"; keep = 0; b64 = 0 }
	next
}
$0 == "--" b || $0 == "--" b "--" {
	if (file != "") close(file)
	file = ""; keep = 0; b64 = 0
	state = ($0 == "--" b "--") ? "end" : "head"
	next
}
state == "head" {
	l = tolower($0)
	if (l ~ /^content-type:[ \t]*text\/cloud-config/) keep = 1
	if (l ~ /^content-transfer-encoding:[ \t]*base64/) b64 = 1
	if ($0 == "") {
		state = "body"
		if (keep && !b64) { n++; file = sprintf("%s.%03d", out, n) } else keep = 0
	}
	next
}
state == "body" && keep { print > file }
