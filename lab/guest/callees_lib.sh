# A module's live callee list (the `callees` verb) against the host's ground
# truth from its relocations (xtask/src/callees_truth.rs, `cargo xtask
# callees-truth`). The truth names what the .ko calls; the kernel rewrites
# some of those instructions at load, and kallsyms may name a callee by
# another alias: so both sides are turned into addresses through
# /proc/kallsyms (root) and compared there, after these rules for what the
# truth file classes as rewritten (each one's kernel source is cited in
# callees_truth.rs):
#   as_is            as compiled: the same calls and tails at that address;
#   ftrace_nop       call __fentry__, a NOP since load: not expected;
#   prefixed         cs-prefixed 6-byte thunk calls: the verb lists 5-byte
#                    instructions only: not expected;
#   return_thunk     jmp __x86_return_thunk: all `ret` (CPU needs no return
#                    thunk) or all a jmp to one *return_thunk;
#   retpoline        call __x86_indirect_thunk_<reg>: all left as they are
#                    (same counts at the thunk's address, whatever kallsyms
#                    calls it) or all made indirect calls (not listed);
#   static_call      call __SCT__<key>: a call to the key's function, which
#                    the preempt mode sets for the scheduler's keys (table
#                    below), or a NOP; the live line says how many of its
#                    sites are static call sites, and they must match;
#   alt:C alt_repl:C present when condition C holds on this CPU (flags and
#                    bugs of /proc/cpuinfo); a `?` feature is not shown
#                    there, so such sites may or may not be live;
#   pv_call:C        a call to what a pv_ops slot holds, when C holds.
#
# callees_compare TRUTH LIVE PREEMPT_MODE MODULE: prints
#   HPINFO callees: ...   what was compared and how each rule came out,
#   MISSING truth: <lines> | live: <line or none>   a truth callee live differently,
#   EXTRA live: <line>                              a live callee the truth lacks,
#   UNRESOLVED <side> <name>                        a name /proc/kallsyms lacks.
# Reads /proc/cpuinfo and /proc/kallsyms (CALLEES_CPUINFO, CALLEES_KALLSYMS
# override them, for the host's test of this file).
callees_compare() {
	awk -v mode="$3" -v module="$4" '
	function hexval(s,   i, n) {
		n = 0; s = tolower(s); sub(/^0x/, "", s)
		for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
		return n
	}
	function hex8(n,   s, i, d) {
		s = ""
		for (i = 0; i < 8; i++) { d = n % 16; s = substr("0123456789abcdef", d + 1, 1) s; n = (n - d) / 16 }
		return s
	}
	# A 16-digit address plus a hex offset (awk numbers hold 53 bits only).
	function addoff(a, off,   hi, lo) {
		hi = hexval(substr(a, 1, 8)); lo = hexval(substr(a, 9, 8)) + hexval(off)
		while (lo >= 4294967296) { lo -= 4294967296; hi++ }
		return hex8(hi) hex8(lo)
	}
	function base(n) { sub(/\+0x[0-9a-f]+$/, "", n); return n }
	function offset(n) { return match(n, /\+0x[0-9a-f]+$/) ? substr(n, RSTART + 1) : "" }
	# The address of a name: among the kallsyms entries of that name, one
	# the truth expects if asked (prefer), else outside the module itself,
	# global, text.
	function addr(n, prefer,   b, k, i, c, best, bestscore, parts, s, x) {
		b = base(n)
		if (!(b in cands)) return ""
		k = split(cands[b], c, " "); best = ""; bestscore = -1
		for (i = 1; i <= k; i++) {
			split(c[i], parts, ":")
			s = parts[2]
			x = offset(n) == "" ? parts[1] : addoff(parts[1], offset(n))
			if (prefer && (x in expd)) s += 100
			if (s > bestscore) { best = parts[1]; bestscore = s }
		}
		return offset(n) == "" ? best : addoff(best, offset(n))
	}
	function holds(cond,   k, lits, i, l, neg, v, unknown) {
		if (cond == "1") return 1
		if (cond == "0") return 0
		k = split(cond, lits, "&"); unknown = 0
		for (i = 1; i <= k; i++) {
			l = lits[i]; neg = sub(/^!/, "", l)
			if (l ~ /^\?/) { unknown = 1; continue }
			if (sub(/^bug\./, "", l)) v = (l in bug); else v = (l in flag)
			if (v == neg) return 0
		}
		return unknown ? 2 : 1
	}
	# The scheduler static calls per preempt mode (kernel/sched/core.c,
	# sched_dynamic_update; x86 enables preempt_schedule through its thunks,
	# arch/x86/include/asm/preempt.h preempt_schedule_dynamic_enabled):
	# a function name, NULL (a NOP; a tail site becomes a return), TRAP (the
	# call becomes a trap instruction) or RET0
	# (__static_call_return0: xor %eax,%eax; a tail site jumps to it).
	function sched_target(key) {
		# On 7.x a WARN with arguments calls its trap through a static call,
		# and the kernel writes each such call as the trap itself (a 5-byte
		# ud1, arch/x86/kernel/static_call.c): no call is left to list.
		if (key == "WARN_trap") return "TRAP"
		if (mode == "voluntary") {
			if (key == "cond_resched" || key == "might_resched") return "__cond_resched"
			if (key ~ /^preempt_schedule/) return "NULL"
		} else if (mode == "none") {
			if (key == "cond_resched") return "__cond_resched"
			if (key == "might_resched") return "RET0"
			if (key ~ /^preempt_schedule/) return "NULL"
		} else if (mode == "full" || mode == "lazy") {
			if (key == "cond_resched" || key == "might_resched") return "RET0"
			if (key == "preempt_schedule") return "preempt_schedule_thunk"
			if (key == "preempt_schedule_notrace") return "preempt_schedule_notrace_thunk"
		}
		return ""
	}
	function want(n) { n = base(n); need[n] = 1; if (length(n) == 63) trunc63[n] = 1 }
	function expect(a, calls, tails, static, text) {
		expd[a] = 1; ecalls[a] += calls; etails[a] += tails; estatic[a] += static
		etext[a] = etext[a] (etext[a] == "" ? "" : "; ") text
	}
	BEGIN {
		# What the scheduler keys may point at (sched_target).
		want("__cond_resched"); want("preempt_schedule_thunk"); want("preempt_schedule_notrace_thunk")
		want("__static_call_return0")
	}
	FILENAME == cpuinfo && /^flags[ \t]*:/ && !nflags++ { sub(/^[^:]*:/, ""); for (i = 1; i <= NF; i++) flag[$i] = 1 }
	FILENAME == cpuinfo && /^bugs[ \t]*:/ && !nbugs++ { sub(/^[^:]*:/, ""); for (i = 1; i <= NF; i++) bug[$i] = 1 }
	FILENAME == truth && !/^#/ && NF == 4 { nt++; tname[nt] = $1; tcalls[nt] = $2; ttails[nt] = $3; tclass[nt] = $4; want($1) }
	FILENAME == live && $1 == "callee" {
		nl++
		for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
		lname[nl] = f["name"]; lcalls[nl] = f["sites"]; ltails[nl] = f["tails"]; lstatic[nl] = f["static_call_sites"]
		ltext[nl] = $0; want(f["name"])
	}
	# The live side names a callee in at most 63 bytes (LineBuf<64>).
	FILENAME == kallsyms && (($3 in need) || (length($3) > 63 && (substr($3, 1, 63) in trunc63))) {
		# Score: not the module itself (4), global (2), text (1).
		s = ($4 != "[" module "]") * 4 + ($2 ~ /^[A-Z]$/) * 2 + ($2 ~ /^[tTwW]$/)
		if ($3 in need) cands[$3] = cands[$3] (($3 in cands) ? " " : "") $1 ":" s
		n = substr($3, 1, 63)
		if (length($3) > 63 && (n in trunc63)) cands[n] = cands[n] ((n in cands) ? " " : "") $1 ":" s
	}
	END {
		if (!nt) { print "UNRESOLVED truth (empty truth file)"; exit }
		# The truth, turned into expected calls and tails per address.
		for (i = 1; i <= nt; i++) {
			n = tname[i]; c = tclass[i]; text = n " " tcalls[i] " " ttails[i] " " c; h = 1
			if (c == "ftrace_nop" || c == "prefixed") { skipped[c] += tcalls[i] + ttails[i]; continue }
			if (c == "return_thunk") { rt += ttails[i]; continue }
			if (c == "retpoline") {
				a = addr(n, 0)
				if (a == "") { print "UNRESOLVED truth " n; continue }
				nrp++; rpaddr[nrp] = a; rpcalls[a] += tcalls[i]; rptails[a] += ttails[i]; rptext[a] = rptext[a] text " "
				isrp[a] = 1; continue
			}
			if (c == "static_call") {
				key = n; sub(/^__SCT__/, "", key); tg = sched_target(key)
				if (tg == "") { unknown_static += tcalls[i] + ttails[i]; print "HPINFO callees: no rule for " n " in mode " mode; continue }
				if (tg == "NULL") { rt += ttails[i]; rtstatic += ttails[i]; continue }
				if (tg == "TRAP") continue
				if (tg == "RET0") {
					if (ttails[i] == 0) continue
					tg = "__static_call_return0"; tcalls[i] = 0
				}
				a = addr(tg, 0)
				if (a == "") { print "UNRESOLVED truth " tg " (for " n ")"; continue }
				expect(a, tcalls[i], ttails[i], tcalls[i] + ttails[i], text " -> " tg); continue
			}
			if (c ~ /^(alt|alt_repl|pv_call):/) {
				cond = c; sub(/^[a-z_]*:/, "", cond); h = holds(cond)
				if (h == 0) continue
				if (c ~ /^pv_call:/) { pv += tcalls[i] + ttails[i]; continue }
			} else if (c != "as_is") {
				print "HPINFO callees: class " c " of " n " not live (undecoded by the verb)"; continue
			}
			a = addr(n, 0)
			if (a == "") { print "UNRESOLVED truth " n; continue }
			if (h == 2) { expect(a, 0, 0, 0, text); ocalls[a] += tcalls[i]; otails[a] += ttails[i] }
			else expect(a, tcalls[i], ttails[i], 0, text)
		}
		# The live list, per address.
		for (i = 1; i <= nl; i++) {
			a = lname[i] == "unknown" ? "" : addr(lname[i], 1)
			if (a == "") { print "UNRESOLVED live " lname[i]; continue }
			seen[a] = 1; lc[a] += lcalls[i]; lt[a] += ltails[i]; ls[a] += lstatic[i]
			lx[a] = lx[a] (lx[a] == "" ? "" : " / ") ltext[i]
			if (lname[i] ~ /return_thunk$/) { rtlive += ltails[i]; rtlivecalls += lcalls[i]; nrtlive++; isrt[a] = 1 }
			if (lname[i] ~ /^__x86_indirect_/ && !(a in isrp)) { print "EXTRA live: " ltext[i] " (an indirect thunk no retpoline site calls)"; done[a] = 1 }
		}
		# Return thunks: all or none, to one thunk.
		if (rtlive == 0 && rtlivecalls == 0) print "HPINFO callees: " rt " return thunk jumps are returns (no return thunk on this CPU)"
		else if (nrtlive == 1 && rtlive == rt && rtlivecalls == 0) print "HPINFO callees: " rt " return thunk jumps all go to one thunk"
		else for (a in isrt) print "MISSING truth: __x86_return_thunk 0 " rt " return_thunk (all, or none, to one thunk) | live: " lx[a]
		for (a in isrt) done[a] = 1
		# Retpolines: all left, or all made indirect.
		kept = 0; gone = 0
		for (a in isrp) {
			if (!(a in seen)) gone++
			else if (lc[a] == rpcalls[a] && lt[a] == rptails[a] && ls[a] == 0) kept++
			else print "MISSING truth: " rptext[a] "| live: " lx[a]
			done[a] = 1
		}
		if (kept && gone) print "MISSING truth: retpoline thunks, " kept " left as calls and " gone " rewritten: all or none"
		else print "HPINFO callees: retpoline thunks: " kept " left as calls, " gone " rewritten"
		# Everything else, address by address.
		for (a in expd) {
			if (a in done) continue
			done[a] = 1
			okc = lc[a] >= ecalls[a] && lc[a] <= ecalls[a] + ocalls[a]
			okt = lt[a] >= etails[a] && lt[a] <= etails[a] + otails[a]
			if (!(a in seen) && ecalls[a] + etails[a] == 0) continue
			if (!(a in seen) || !okc || !okt || ls[a] != estatic[a])
				print "MISSING truth: " etext[a] " | live: " ((a in seen) ? lx[a] : "none")
			else matched++
		}
		for (a in seen) {
			if (a in done) continue
			# A static call the rules do not know, or a pv_ops call.
			if (ls[a] == lc[a] + lt[a] && ls[a] <= unknown_static) { unknown_static -= ls[a]; continue }
			if (ls[a] == 0 && lt[a] == 0 && lc[a] <= pv) { pv -= lc[a]; continue }
			print "EXTRA live: " lx[a]
		}
		print "HPINFO callees: " nt " truth lines, " nl " live callees, " matched " matched by address; preempt mode " mode "; not expected live: " skipped["ftrace_nop"] + 0 " fentry calls, " skipped["prefixed"] + 0 " prefixed thunk calls"
	}' cpuinfo="${CALLEES_CPUINFO:-/proc/cpuinfo}" truth="$1" live="$2" kallsyms="${CALLEES_KALLSYMS:-/proc/kallsyms}" \
		"${CALLEES_CPUINFO:-/proc/cpuinfo}" "$1" "$2" "${CALLEES_KALLSYMS:-/proc/kallsyms}"
}
