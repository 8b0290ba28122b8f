# lib.sh -- shell helpers shared by the pipelines (sourced, not run): starting stages in their
# own sessions (so a terminal's Ctrl-C reaches only the script, which then stops them in a safe
# order), remembering their pids, supervising (restart a stage that died), and stopping
# everything: TERM, a bounded wait, then KILL. Nothing is left behind: every pid we started is
# waited for. Stages log to $SRM_LOGS/<name>.log.
# Used by: train.sh, join.sh, demo.sh.

SRM_ROOT=${SRM_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
SRM_BIN=${BIN:-$SRM_ROOT/bin}
case $SRM_BIN in /*) ;; *) SRM_BIN=$SRM_ROOT/$SRM_BIN ;; esac
SRM_PY=/usr/bin/python3                     # the python that has nibabel/numpy (not the PATH one)
# Several stages share the cores: OpenMP threads that spin at barriers steal them from each
# other (measured: half the trainer's CPU in libgomp spin loops), so idle threads sleep instead.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

declare -A SRM_PID=()       # name -> pid of the running stage
declare -A SRM_CMD=()       # name -> its command line (for restarts), NUL-free, %q-quoted
declare -A SRM_RESTARTS=()  # name -> restarts so far

srm_log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${SRM_SCRIPT:-pipeline}" "$*" >&2; }
srm_die() { srm_log "error: $*"; exit 1; }

# srm_need_bin NAME...: the stage binaries must exist.
srm_need_bin() {
    local b
    for b in "$@"; do
        [[ -x $SRM_BIN/srm-$b ]] || srm_die "$SRM_BIN/srm-$b not found: run make (or set BIN=...)"
    done
}

# srm_start NAME CMD...: start CMD in its own session, stdout+stderr appended to $SRM_LOGS/NAME.log.
srm_start() {
    local name=$1; shift
    local q
    printf -v q '%q ' "$@"
    SRM_CMD[$name]=$q
    srm_spawn "$name"
}

srm_spawn() {
    local name=$1 parent=$BASHPID
    # setsid: the stage gets its own session and process group, out of reach of the terminal's
    # SIGINT; eval of the %q-quoted command keeps every argument intact. exec: the background
    # subshell becomes setsid, which (not being a group leader) becomes the stage without a
    # fork, so $! is the stage's own pid, the one we signal and wait for. SRM_PARENT_PID: the
    # stage stops (as on SIGTERM) when this shell ends, even by kill -9 (common/stage.c: the
    # kernel's parent-death signal), so a killed script leaves nothing running on its run folder.
    { export SRM_PARENT_PID=$parent; eval "exec setsid ${SRM_CMD[$name]}"; } >>"$SRM_LOGS/$name.log" 2>&1 </dev/null &
    SRM_PID[$name]=$!
    srm_log "started $name (pid $!), log $SRM_LOGS/$name.log"
}

# The console during a run: the trainer's newest progress line ("step N/M ..."), its wait for the
# final validation and the result, every stage's errors (E: lines), and the warnings (W: lines) of
# the stages SRM_CONSOLE_WARN names -- the trainer's, exporter's and loader's (checkpoints not
# stored, resends, a resume that keeps its schedule, a case skipped: the loader warns once a case,
# naming the file and why), or join.sh's workers -- as they reach the logs under $SRM_LOGS: only
# what was written after srm_console_init (a resumed run does not repeat the first one's lines),
# whole lines only, at most SRM_CONSOLE_MAX lines of a log per tick.
declare -A SRM_LOG_OFF=()   # log file -> bytes already shown
SRM_CONSOLE_MAX=${SRM_CONSOLE_MAX:-5}
SRM_CONSOLE_WARN=${SRM_CONSOLE_WARN:-trainer|exporter|loader}   # stages whose W: lines are shown too
srm_console_init() {
    local f
    for f in "$SRM_LOGS"/*.log; do [[ -e $f ]] && SRM_LOG_OFF[$f]=$(stat -c %s "$f"); done
}
srm_console_tick() {
    local LC_ALL=C f size off chunk whole name pat n line     # C: ${#x} counts bytes
    for f in "$SRM_LOGS"/*.log; do
        [[ -e $f ]] || continue
        size=$(stat -c %s "$f" 2>/dev/null) || continue
        off=${SRM_LOG_OFF[$f]:-0}
        ((size < off)) && off=0                          # replaced: from its start
        ((size > off)) || continue
        chunk=$(tail -c +"$((off + 1))" "$f" | head -c "$((size - off))"; printf x)
        chunk=${chunk%x}
        whole=${chunk%$'\n'*}                           # up to the last newline: whole lines
        [[ $whole == "$chunk" ]] && continue              # not one whole line yet
        SRM_LOG_OFF[$f]=$((off + ${#whole} + 1))
        name=$(basename "$f" .log)
        if [[ $name =~ ^($SRM_CONSOLE_WARN)$ ]]; then pat='^[EW]: '; else pat='^E: '; fi
        [[ $name == trainer ]] && pat+='|^I: trainer: final (eval job|validation)'    # the end's waits and result
        n=$(grep -cE "$pat" <<<"$whole")
        if ((n)); then
            grep -E "$pat" <<<"$whole" | head -n "$SRM_CONSOLE_MAX" | while IFS= read -r line; do printf '  [%s] %s\n' "$name" "$line"; done
            ((n > SRM_CONSOLE_MAX)) && printf '  [%s] ... %d more in %s\n' "$name" "$((n - SRM_CONSOLE_MAX))" "$f"
        fi
        if [[ $name == trainer ]]; then
            line=$(grep '^step ' <<<"$whole" | tail -n 1)
            [[ -n $line ]] && printf '%s\n' "$line"
        fi
    done
}

# srm_alive NAME: 0 when the stage's process is still running.
srm_alive() {
    local pid=${SRM_PID[$1]:-}
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

# srm_reap NAME: collect the exit status of a stage that ended (prints it).
srm_reap() {
    local pid=${SRM_PID[$1]:-} rc=0
    [[ -n $pid ]] || { echo 0; return; }
    wait "$pid" 2>/dev/null || rc=$?
    unset 'SRM_PID[$1]'
    echo "$rc"
}

# srm_stop NAME [TIMEOUT_S]: SIGTERM, wait up to TIMEOUT_S (default 10), then SIGKILL; reaped.
srm_stop() {
    local name=$1 t=${2:-10} pid=${SRM_PID[$1]:-} i
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < t * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            srm_log "$name (pid $pid) did not stop within ${t}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    wait "$pid" 2>/dev/null
    unset 'SRM_PID[$name]'
}

# srm_stop_all: every stage still running, in parallel (TERM, bounded wait, KILL).
srm_stop_all() {
    local name
    for name in "${!SRM_PID[@]}"; do srm_stop "$name" "${1:-10}" & done
    wait 2>/dev/null
    for name in "${!SRM_PID[@]}"; do          # the subshells could not unset; make sure and reap
        kill -KILL "${SRM_PID[$name]}" 2>/dev/null
        wait "${SRM_PID[$name]}" 2>/dev/null
        unset 'SRM_PID[$name]'
    done
}

# srm_supervise NAME MAX: restart the stage if it died (up to MAX restarts). 1 when it is gone
# for good -- it ended cleanly (exit 0), stopped on a configuration error (exit 78, sysexits'
# EX_CONFIG: a restart cannot cure it) or used up its restarts; it then leaves SRM_PID and its
# status is in SRM_LAST_RC[NAME]. 0 while it runs (again).
declare -A SRM_LAST_RC=()
srm_supervise() {
    local name=$1 max=$2 rc
    srm_alive "$name" && return 0
    [[ -n ${SRM_PID[$name]:-} ]] || return 1
    rc=$(srm_reap "$name")
    unset 'SRM_PID[$name]'                  # srm_reap ran in a subshell: its unset stayed there
    SRM_LAST_RC[$name]=$rc
    [[ $rc == 0 ]] && { srm_log "$name exited"; return 1; }
    [[ $rc == 78 ]] && { srm_log "$name stopped on a configuration error (status 78): not restarted"; return 1; }
    local n=${SRM_RESTARTS[$name]:-0}
    if ((n >= max)); then
        srm_log "$name died (status $rc) and was restarted $n times already: giving up on it"
        return 1
    fi
    SRM_RESTARTS[$name]=$((n + 1))
    srm_log "$name died (status $rc): restarting it ($((n + 1))/$max)"
    srm_spawn "$name"
    return 0
}

# srm_cores: CPU cores available to us.
# srm_run_held RUN: prints what RUN holds of a run (checkpoint files, metrics.jsonl) and returns
# 0 when it holds one: such a folder is continued with --resume, never started over (a fresh run
# there would append to its metrics.jsonl and mix its checkpoints with the old ones).
srm_run_held() {
    local n
    n=$(find "$1/checkpoints" "$1/spool" -maxdepth 1 -name 'step-*.ckpt' 2>/dev/null | wc -l)
    ((n)) || [[ -s $1/metrics.jsonl ]] || return 1
    echo "$n checkpoint file(s)$([[ -s $1/metrics.jsonl ]] && echo ", metrics.jsonl")"
}

srm_cores() { nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1; }

# srm_endpoints MODE DIR_OR_HOSTPORT: sets EP_BIND_<name> / EP_CONN_<name> for volumes, cases,
# patches, evaljobs, metrics, exporter. MODE ipc: ipc://DIR/sock/<name>. MODE tcp: HOST:BASE,
# ports BASE..BASE+5; binders use HOST, local connectors 127.0.0.1 when HOST is * or 0.0.0.0.
SRM_SOCKETS=(volumes cases patches evaljobs metrics exporter)
srm_endpoints() {
    local mode=$1 arg=$2 i=0 name host port conn
    if [[ $mode == ipc ]]; then
        mkdir -p "$arg/sock"
        for name in "${SRM_SOCKETS[@]}"; do
            printf -v "EP_BIND_$name" '%s' "ipc://$arg/sock/$name"
            printf -v "EP_CONN_$name" '%s' "ipc://$arg/sock/$name"
        done
        return
    fi
    host=${arg%:*}; port=${arg##*:}
    [[ $port =~ ^[0-9]+$ && -n $host && $host != "$arg" ]] || srm_die "--tcp: '$arg' is not HOST:BASEPORT"
    conn=$host
    [[ $host == '*' || $host == 0.0.0.0 ]] && conn=127.0.0.1
    for name in "${SRM_SOCKETS[@]}"; do
        printf -v "EP_BIND_$name" '%s' "tcp://$host:$((port + i))"
        printf -v "EP_CONN_$name" '%s' "tcp://$conn:$((port + i))"
        i=$((i + 1))
    done
}

# srm_is_local_bind EP: 0 when binding EP stays on this host.
srm_is_local_bind() {
    case $1 in
        ipc://*|inproc://*|tcp://127.*|tcp://localhost:*|"tcp://[::1]:"*) return 0 ;;
        *) return 1 ;;
    esac
}
