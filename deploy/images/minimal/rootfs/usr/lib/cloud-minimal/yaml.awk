# yaml.awk: flatten the conservative YAML subset used on a NoCloud config drive
# into one "path<TAB>value" line per scalar. Runs under busybox awk.
#
#   instance-id: i-1           ->  instance-id<TAB>i-1
#   public-keys:               ->  public-keys.0<TAB>ssh-ed25519 AAAA... alice
#     - ssh-ed25519 AAAA... alice
#   routes: [{to: 0.0.0.0/0, via: 10.0.0.1}]
#                              ->  routes.0.to<TAB>0.0.0.0/0
#                                  routes.0.via<TAB>10.0.0.1
#
# Supported: block mappings and sequences (also sequences at their key's indentation and
# mappings inside sequence items), flow sequences and mappings (also spanning several lines,
# so a JSON document works too), single- and double-quoted scalars, plain scalars with
# " #" comments, "|" and ">" block scalars, continuation lines of plain scalars, "---".
# Not supported (ignored or taken literally): anchors/aliases, tags other than a leading
# "!!type", complex keys, plain keys containing spaces or ':'.
# Values never contain a TAB or a newline in the output (both become a space), so a consumer
# can split on the first TAB.

BEGIN { SEP = "."; nst = 0; pend = 0; inflow = 0; inblock = 0; haslast = 0 }

function join(p, k) { return (p == "") ? k : p SEP k }
function ltrim(s) { sub(/^[ \t]+/, "", s); return s }
function rtrim(s) { sub(/[ \t\r]+$/, "", s); return s }

function flush() {
	if (haslast) { gsub(/[\t\r\n]/, " ", lastval); print lastpath "\t" lastval }
	haslast = 0
}
function emit(path, val) { flush(); lastpath = path; lastval = val; haslast = 1 }

function push(indent, path, kind) { nst++; ind[nst] = indent; pth[nst] = path; knd[nst] = kind; cnt[nst] = 0 }

# --- character cursor over S at P (used for quoted scalars and flow collections) ---
function skipws() { while (P <= length(S) && substr(S, P, 1) ~ /[ \t\r\n]/) P++ }

function pquoted(   q, c, out, n) {
	q = substr(S, P, 1); P++; out = ""; n = length(S)
	while (P <= n) {
		c = substr(S, P, 1)
		if (q == "'") {
			if (c == "'") {
				if (substr(S, P + 1, 1) == "'") { out = out "'"; P += 2; continue }
				P++; return out
			}
		} else {
			if (c == "\\") {
				c = substr(S, P + 1, 1); P += 2
				if (c == "n") out = out "\n"
				else if (c == "t") out = out "\t"
				else if (c == "u") { P += 4; out = out "?" }
				else out = out c
				continue
			}
			if (c == "\"") { P++; return out }
		}
		out = out c; P++
	}
	return out
}

# plain scalar inside a flow collection; iskey: stop at ':' followed by space/indicator/end
function pplain(iskey,   c, nc, out, n) {
	out = ""; n = length(S)
	while (P <= n) {
		c = substr(S, P, 1)
		if (c == "," || c == "]" || c == "}") break
		if (c == ":") {
			nc = substr(S, P + 1, 1)
			if (iskey && (nc == "" || index(" \t,[]{}", nc))) break
		}
		if (c == "#" && (out == "" || out ~ /[ \t]$/)) { P = n + 1; break }
		out = out c; P++
	}
	return rtrim(out)
}

function pflow(path,   c, idx, k) {
	skipws(); c = substr(S, P, 1)
	if (c == "[") {
		P++; idx = 0
		for (;;) {
			skipws(); c = substr(S, P, 1)
			if (c == "") return
			if (c == "]") { P++; return }
			if (c == ",") { P++; continue }
			pflow(join(path, idx)); idx++
			skipws(); c = substr(S, P, 1)
			if (c == ",") { P++; continue }
			if (c == "]") { P++; return }
			if (c == "") return
			P++
		}
	}
	if (c == "{") {
		P++
		for (;;) {
			skipws(); c = substr(S, P, 1)
			if (c == "") return
			if (c == "}") { P++; return }
			if (c == ",") { P++; continue }
			if (c == "\"" || c == "'") k = pquoted(); else k = pplain(1)
			skipws()
			if (substr(S, P, 1) == ":") { P++; pflow(join(path, k)) } else emit(join(path, k), "")
			skipws(); c = substr(S, P, 1)
			if (c == ",") { P++; continue }
			if (c == "}") { P++; return }
			if (c == "") return
			P++
		}
	}
	if (c == "\"" || c == "'") { emit(path, pquoted()); return }
	emit(path, pplain(0))
}

# 1 when the brackets of s (outside quotes) are balanced
function balanced(s,   i, c, d, q, n) {
	d = 0; q = ""; n = length(s)
	for (i = 1; i <= n; i++) {
		c = substr(s, i, 1)
		if (q != "") {
			if (q == "\"" && c == "\\") { i++; continue }
			if (c == q) q = ""
			continue
		}
		if (c == "\"" || c == "'") q = c
		else if (c == "[" || c == "{") d++
		else if (c == "]" || c == "}") d--
		else if (c == "#" && (i == 1 || substr(s, i - 1, 1) ~ /[ \t]/)) break
	}
	return d <= 0
}

function startflow(path, text) {
	flowpath = path; flowbuf = text
	if (balanced(flowbuf)) { S = flowbuf; P = 1; pflow(flowpath); inflow = 0 } else inflow = 1
}

# a scalar value in block context
function bscalar(v,   i) {
	v = ltrim(rtrim(v))
	if (v ~ /^!![a-z]+([ \t]|$)/) { sub(/^!![a-z]+[ \t]*/, "", v) }
	if (v ~ /^["']/) { S = v; P = 1; return pquoted() }
	if (v ~ /^#/) return ""
	i = index(v, " #"); if (i) v = substr(v, 1, i - 1)
	i = index(v, "\t#"); if (i) v = substr(v, 1, i - 1)
	return rtrim(v)
}

# value part of "key: value" (or of a sequence item) at path, line indentation n
function value(path, v, n) {
	v = ltrim(rtrim(v))
	if (v ~ /^!![a-z]+([ \t]|$)/) { sub(/^!![a-z]+[ \t]*/, "", v) }
	if (index("[{", substr(v, 1, 1))) { startflow(path, v); return }
	if (v ~ /^[|>][-+0-9]*([ \t]+#.*)?$/) {
		inblock = 1; blkpath = path; blkind = n; blkval = ""; blkstrip = -1
		blkfold = (substr(v, 1, 1) == ">"); return
	}
	emit(path, bscalar(v))
}

# returns the key length (through ':' and following blanks) in KLEN and the key in KEY, or 0
function parsekey(t,   m) {
	if (t ~ /^["']/) {
		S = t; P = 1; KEY = pquoted(); skipws()
		if (substr(S, P, 1) != ":") return 0
		m = substr(S, P + 1, 1)
		if (m != "" && m !~ /[ \t]/) return 0
		KLEN = P; return 1
	}
	if (index(" \t:#,[]{}\"'&*!|>%@`-", substr(t, 1, 1))) return 0
	if (match(t, /^[^ \t:]+[ \t]*:([ \t]|$)/)) {
		KEY = substr(t, 1, RLENGTH); sub(/[ \t]*:[ \t]?$/, "", KEY)
		KLEN = RLENGTH; return 1
	}
	return 0
}

function line(n, t,   rest, col, item, k) {
	for (;;) {
		while (nst > 0 && ind[nst] > n) nst--
		if (pend) {
			pend = 0
			if (t ~ /^-([ \t]|$)/ && (n > pendind || (pendmap && n == pendind))) push(n, pendpath, "seq")
			else if (n > pendind && parsekey(t)) push(n, pendpath, "map")
			else if (n > pendind) { value(pendpath, t, pendind); return }
			else emit(pendpath, "")
		}
		if (nst == 0) {
			if (index("[{", substr(t, 1, 1))) { startflow("", t); return }
			push(n, "", (t ~ /^-([ \t]|$)/) ? "seq" : "map")
		}
		if (ind[nst] < n) {
			# deeper than the open container: continuation of a plain scalar
			if (haslast && t !~ /^-([ \t]|$)/) lastval = lastval " " bscalar(t)
			return
		}
		if (knd[nst] == "seq" && t !~ /^-([ \t]|$)/ && nst > 1 && ind[nst - 1] == n) { nst--; continue }
		break
	}
	if (knd[nst] == "seq") {
		if (t !~ /^-([ \t]|$)/) return
		item = join(pth[nst], cnt[nst]); cnt[nst]++
		rest = substr(t, 2); col = n + 1
		while (rest ~ /^[ \t]/) { rest = substr(rest, 2); col++ }
		rest = rtrim(rest)
		if (rest == "" || rest ~ /^#/) { pend = 1; pendpath = item; pendind = n; pendmap = 0; return }
		if (rest ~ /^-([ \t]|$)/) { push(col, item, "seq"); line(col, rest); return }
		if (parsekey(rest)) { push(col, item, "map"); line(col, rest); return }
		value(item, rest, n)
		return
	}
	if (!parsekey(t)) return
	k = join(pth[nst], KEY)
	rest = substr(t, KLEN + 1)
	rest = ltrim(rtrim(rest))
	if (rest == "" || rest ~ /^#/) { pend = 1; pendpath = k; pendind = n; pendmap = 1; return }
	value(k, rest, n)
}

{
	raw = $0
	sub(/\r$/, "", raw)
	if (inflow) {
		flowbuf = flowbuf " " raw
		if (balanced(flowbuf)) { S = flowbuf; P = 1; pflow(flowpath); inflow = 0 }
		next
	}
	if (inblock) {
		t = raw; n = 0
		while (substr(t, n + 1, 1) == " ") n++
		if (t ~ /^[ \t]*$/) { blkval = blkval "\n"; next }
		if (n > blkind) {
			if (blkstrip < 0) blkstrip = n
			t = substr(t, blkstrip + 1)
			blkval = blkval t (blkfold ? " " : "\n")
			next
		}
		inblock = 0; sub(/[ \n]+$/, "", blkval); emit(blkpath, blkval)
	}
	t = raw; n = 0
	while (substr(t, n + 1, 1) == " ") n++
	t = substr(t, n + 1)
	if (t ~ /^[ \t]*$/ || t ~ /^#/) next
	if (n == 0 && (t ~ /^---([ \t]|$)/ || t ~ /^\.\.\.([ \t]|$)/ || t ~ /^%/)) {
		flush(); if (pend) { emit(pendpath, ""); pend = 0 }
		nst = 0; next
	}
	line(n, rtrim(t))
}

END {
	if (inflow) { S = flowbuf; P = 1; pflow(flowpath) }
	if (inblock) { sub(/[ \n]+$/, "", blkval); emit(blkpath, blkval) }
	if (pend) emit(pendpath, "")
	flush()
}
