# shellcheck shell=bash
# The body of generate.sbatch and score.sbatch (sourced by them, with
# GROK1_MODE set): checks the GROK1_* variables, runs grok1-run on every task
# of the allocation with srun, and requeues the job when a SIGTERM ahead of
# the time limit interrupted it, so that the next run resumes. In a job
# array each task runs one shard of the input (--shard K/N) and the task
# that finds every shard finished joins them with grok1-merge.
# Not a program of its own; see README.md beside it.
# shellcheck disable=SC2015  # "test && test || die" reads as intended here

die() {
  echo "grok1-job: error: $*" >&2
  exit 2
}

# --- check the environment ---------------------------------------------------
[ -n "${SLURM_JOB_ID:-}" ] ||
  die "not inside a Slurm job: submit it with sbatch (see scripts/slurm/README.md)"
# The job to signal, inspect and requeue: in a job array this task alone
# (one task's SLURM_JOB_ID is the array's own id, which names every task).
jid=$SLURM_JOB_ID
if [ -n "${SLURM_ARRAY_JOB_ID:-}" ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  jid="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
fi
[ -n "${GROK1_CHECKPOINT:-}" ] ||
  die "GROK1_CHECKPOINT is not set: export GROK1_CHECKPOINT=/path/to/model.h5 before sbatch"
[ -r "$GROK1_CHECKPOINT" ] ||
  die "GROK1_CHECKPOINT=$GROK1_CHECKPOINT: no such readable file (relative paths start at $PWD)"
[ -n "${GROK1_INPUT:-}" ] ||
  die "GROK1_INPUT is not set: export GROK1_INPUT=/path/to/requests.jsonl before sbatch"
[ -f "$GROK1_INPUT" ] && [ -r "$GROK1_INPUT" ] ||
  die "GROK1_INPUT=$GROK1_INPUT: no such readable file (relative paths start at $PWD)"
[ -n "${GROK1_OUTPUT:-}" ] ||
  die "GROK1_OUTPUT is not set: export GROK1_OUTPUT=/path/to/results.jsonl before sbatch"
outdir=$(dirname -- "$GROK1_OUTPUT")
[ -d "$outdir" ] && [ -w "$outdir" ] ||
  die "GROK1_OUTPUT=$GROK1_OUTPUT: folder $outdir does not exist or is not writable"
if [ -n "${GROK1_TOKENIZER:-}" ]; then
  [ -r "$GROK1_TOKENIZER" ] ||
    die "GROK1_TOKENIZER=$GROK1_TOKENIZER: no such readable file"
fi
if [ -n "${GROK1_BIN:-}" ]; then
  run="$GROK1_BIN/grok1-run"
  [ -x "$run" ] || die "GROK1_BIN=$GROK1_BIN: no executable grok1-run in that folder"
else
  run=$(command -v grok1-run) ||
    die "grok1-run is not on PATH: set GROK1_BIN to the folder holding it (e.g. build/mpi)"
fi
# GROK1_ARGS and GROK1_SRUN_ARGS are split on spaces: paths inside them must
# not contain any.
read -r -a extra <<< "${GROK1_ARGS:-}"
read -r -a srun_extra <<< "${GROK1_SRUN_ARGS:-}"
# (${a[@]+"${a[@]}"}: bash before 4.4 calls an empty array unbound under set -u)
for a in ${extra[@]+"${extra[@]}"}; do
  case "$a" in
    --mode|--mode=*|--input|--input=*|--output|--output=*|--checkpoint|--checkpoint=*|--tokenizer|--tokenizer=*|--resume|--shard|--shard=*)
      die "GROK1_ARGS must not contain $a: the script sets it (from GROK1_MODE, GROK1_INPUT, GROK1_OUTPUT, GROK1_CHECKPOINT, GROK1_TOKENIZER, and the job array)" ;;
  esac
done

# --- job arrays: task K of N runs shard K/N into GROK1_OUTPUT.shard-K-of-N ----
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ] && [ "${SLURM_ARRAY_TASK_COUNT:-1}" -le 1 ]; then
  # an array of one task is a plain job: it would run every request into
  # GROK1_OUTPUT, not the shard of an array that ran as several tasks
  for f in "$GROK1_OUTPUT".shard-*-of-*; do
    [ -e "$f" ] || continue
    die "job array ${SLURM_ARRAY_JOB_ID:-} has one task (--array=${SLURM_ARRAY_TASK_ID}), but shard outputs such as $f exist: to run one shard of that array again, requeue its task (scontrol requeue ARRAYID_K) or submit the whole array again (e.g. --array=0-$((${f##*-of-} - 1))) with the same GROK1_* variables: finished tasks resume with nothing to run"
  done
fi
merged=""
shard=()
merge_dump=()
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ] && [ "${SLURM_ARRAY_TASK_COUNT:-1}" -gt 1 ]; then
  n=$SLURM_ARRAY_TASK_COUNT
  lo=${SLURM_ARRAY_TASK_MIN:-0}
  hi=${SLURM_ARRAY_TASK_MAX:-0}
  [ $((hi - lo + 1)) = "$n" ] && [ "${SLURM_ARRAY_TASK_STEP:-1}" = 1 ] ||
    die "job array ${SLURM_ARRAY_JOB_ID:-}: its task ids must be one range without gaps (e.g. --array=0-7 or --array=0-7%2), so that task K of N runs shard K/N; got $n tasks from $lo to $hi"
  k=$((SLURM_ARRAY_TASK_ID - lo))
  [ ! "$GROK1_OUTPUT" -ef "$GROK1_INPUT" ] ||
    die "GROK1_OUTPUT=$GROK1_OUTPUT is the input file: give the results another name"
  merged=$GROK1_OUTPUT
  GROK1_OUTPUT="$merged.shard-$k-of-$n"
  shard=(--shard "$k/$n")
  if [ -z "${GROK1_MERGE:-}" ]; then
    if [ -n "${GROK1_BIN:-}" ]; then GROK1_MERGE="$GROK1_BIN/grok1-merge"; else GROK1_MERGE="$(dirname -- "$run")/grok1-merge"; fi
  fi
  [ -x "$GROK1_MERGE" ] ||
    die "no executable grok1-merge beside grok1-run ($GROK1_MERGE): a job array needs it to join the shards; set GROK1_MERGE to its path"
  # every task writes a logits dump of its own: --dump-logits D becomes
  # D.shard-K-of-N; the merge joins them into D. And a trace of its own:
  # --trace T becomes T.shard-K-of-N (one timeline per task, not merged),
  # else every task would write T and all but the last would be lost.
  for i in ${extra[@]+"${!extra[@]}"}; do
    case "${extra[$i]}" in
      --dump-logits)
        if [ $((i + 1)) -lt ${#extra[@]} ]; then
          merge_dump=(--dump-logits "${extra[i + 1]}")
          extra[i + 1]="${extra[i + 1]}.shard-$k-of-$n"
        fi ;;
      --dump-logits=*)
        merge_dump=(--dump-logits "${extra[$i]#--dump-logits=}")
        extra[i]="${extra[$i]}.shard-$k-of-$n" ;;
      --trace)
        if [ $((i + 1)) -lt ${#extra[@]} ]; then
          extra[i + 1]="${extra[i + 1]}.shard-$k-of-$n"
        fi ;;
      --trace=*)
        extra[i]="${extra[$i]}.shard-$k-of-$n" ;;
    esac
  done
fi

args=(--checkpoint "$GROK1_CHECKPOINT" --mode "$GROK1_MODE"
      --input "$GROK1_INPUT" --output "$GROK1_OUTPUT" ${shard[@]+"${shard[@]}"})
[ -n "${GROK1_TOKENIZER:-}" ] && args+=(--tokenizer "$GROK1_TOKENIZER")
# Continue what an earlier run of this job (or an earlier job) left behind:
# grok1-run keeps the complete lines of OUT.partial (or OUT) and runs the rest.
if [ -e "$GROK1_OUTPUT.partial" ] || [ -e "$GROK1_OUTPUT" ]; then
  args+=(--resume)
fi
args+=(${extra[@]+"${extra[@]}"})

# The complete result lines an earlier run left: a run interrupted before it
# adds one is not requeued (the next would end the same way).
lines() { if [ -e "$1" ]; then wc -l < "$1" | tr -d ' '; else echo 0; fi; }
kept_before=$(lines "$GROK1_OUTPUT.partial")

# One OpenMP thread per CPU Slurm gave each task, unless set by the user.
if [ -z "${OMP_NUM_THREADS:-}" ] && [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
  export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
fi

echo "grok1-job: job $SLURM_JOB_ID run $(( ${SLURM_RESTART_COUNT:-0} + 1 )) started $(date '+%F %T')" \
     "on ${SLURM_JOB_NUM_NODES:-1} node(s) ${SLURM_JOB_NODELIST:-?}, ${SLURM_NTASKS:-1} task(s)" \
     "${merged:+(array ${SLURM_ARRAY_JOB_ID:-?} task ${SLURM_ARRAY_TASK_ID}: shard ${shard[1]})}"

# GROK1_CHECK_INPUT=1: every request read as the run will read it, here on
# the batch host and without MPI (seconds), before srun starts the ranks: a
# refused request ends the job at once, each one named, where the run would
# stop at the first only after loading the weights
if [ "${GROK1_CHECK_INPUT:-0}" = 1 ]; then
  echo "grok1-job: checking the input: $run --check-input ${args[*]}"
  "$run" --check-input "${args[@]}"
  crc=$?
  if [ "$crc" != 0 ]; then
    echo "grok1-job: the input check failed with exit status $crc $(date '+%F %T'): nothing was run; fix what it names (a request of $GROK1_INPUT with status 1, the layout or the plan with 2) and submit again"
    exit "$crc"
  fi
fi

# --- run ---------------------------------------------------------------------
# srun runs in the background so that this shell can take the SIGTERM Slurm
# sends ahead of the time limit (#SBATCH --signal=B:TERM@...) and pass it on
# to the ranks with scancel: srun itself would kill them on SIGTERM instead of
# forwarding it. A signal interrupts `wait`, so wait again until srun ends.
# srun is given --cpus-per-task itself: from Slurm 22.05 to 23.02 it does not
# take sbatch's, and each rank would run its OMP_NUM_THREADS threads on one core.
# GROK1_MPI: srun's --mpi plugin (default pmix; `srun --mpi=list` shows them).
cpus=()
[ -n "${SLURM_CPUS_PER_TASK:-}" ] && cpus=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
# Wait for background process $1 to end, through the signals a trap set by
# the caller takes (it sets got_signal=1: a signal interrupts `wait`); its
# exit status.
wait_through_signals() {
  local rc
  while :; do
    got_signal=0
    wait "$1"
    rc=$?
    [ "$got_signal" = 1 ] || return "$rc"
  done
}
cmd=(srun --mpi="${GROK1_MPI:-pmix}" --kill-on-bad-exit=1 --label ${cpus[@]+"${cpus[@]}"}
     ${srun_extra[@]+"${srun_extra[@]}"} "$run" "${args[@]}")
echo "grok1-job: ${cmd[*]}"
got_signal=0
"${cmd[@]}" &
srun_pid=$!
# Any of the signals a site may choose for the warning (--signal=B:USR1@...)
# is passed on as SIGTERM; without a trap, USR1 or USR2 would end this shell.
trap 'got_signal=1; echo "grok1-job: a signal (TERM, INT, USR1 or USR2) at $(date +%T): passing it to grok1-run"; scancel --signal=TERM "$jid"' TERM INT USR1 USR2
wait_through_signals "$srun_pid"
rc=$?
trap - TERM INT USR1 USR2
if [ "$rc" = 0 ] && [ ! -e "$GROK1_OUTPUT" ]; then
  echo "grok1-job: srun exited 0 but $GROK1_OUTPUT was not written: the ranks did not start (see srun's errors above)"
  rc=1
fi

# grok1-merge, with a signal (the time limit's warning) passed on to it: it
# then removes what it made, and the lock goes too.
merge() {
  "$GROK1_MERGE" --input "$GROK1_INPUT" --output "$merged" "$@" &
  local mpid=$! mrc
  merge_signal=0
  trap 'merge_signal=1; got_signal=1; kill -TERM "$mpid" 2>/dev/null' TERM INT USR1 USR2
  wait_through_signals "$mpid"
  mrc=$?
  trap - TERM INT USR1 USR2
  return "$mrc"
}

# The last shard to finish joins them all, and their logits dumps when
# there are any (a lock folder keeps two tasks finishing together from both
# doing it). A shard's dump is finished before its output gets its name.
if [ "$rc" = 0 ] && [ -n "$merged" ]; then
  all=()
  for ((i = 0; i < n; i++)); do all+=("$merged.shard-$i-of-$n"); done
  done_all=1
  for f in "${all[@]}"; do [ -e "$f" ] || done_all=0; done
  if [ "$done_all" = 1 ] && [ ! -e "$merged" ] && mkdir "$merged.merging" 2>/dev/null; then
    if [ -e "$merged" ]; then # another task merged between the test and the lock
      echo "grok1-job: $merged exists already: not merged again"
    elif merge ${merge_dump[@]+"${merge_dump[@]}"} "${all[@]}"; then
      if [ -n "${merge_dump[1]:-}" ]; then
        echo "grok1-job: every shard is finished: $merged and its logits dump ${merge_dump[1]} are complete (the ${n} shard outputs and their dumps ${merge_dump[1]}.shard-*-of-$n may be removed)"
      else
        echo "grok1-job: every shard is finished: $merged is complete (the ${n} shard outputs may be removed)"
      fi
    else
      rmdir "$merged.merging"
      if [ "$merge_signal" = 1 ]; then
        echo "grok1-job: interrupted while joining the shards $(date '+%F %T') (the job's time is up): $merged was not written; submit the array again with the same GROK1_* variables (every task resumes with nothing to run, and the last one joins them), or join them by hand: grok1-merge --input $GROK1_INPUT --output $merged ${merge_dump[*]:-} $merged.shard-*-of-$n"
      else
        echo "grok1-job: grok1-merge failed (above) $(date '+%F %T'); the shard outputs $merged.shard-*-of-$n are kept: join them by hand with grok1-merge --input $GROK1_INPUT --output $merged ${merge_dump[*]:-} ..."
      fi
      exit 1
    fi
    rmdir "$merged.merging"
  elif [ "$done_all" = 0 ]; then
    echo "grok1-job: shard ${shard[1]} is finished; the last task of the array to finish joins the shards into $merged"
  elif [ -e "$merged" ]; then
    echo "grok1-job: $merged exists already: not merged again"
    for f in "${all[@]}"; do
      if [ "$f" -nt "$merged" ]; then
        echo "grok1-job: but shard output $f is newer than $merged (requests added to the input since?): remove $merged (and ${merge_dump[1]:-its logits dump, if any}) and run grok1-merge --input $GROK1_INPUT --output $merged ${merge_dump[*]:-} $merged.shard-*-of-$n"
        break
      fi
    done
  else
    echo "grok1-job: $merged.merging exists: another task is merging the shards, or one was killed while it did; if no task of the array is running, remove that folder and run grok1-merge --input $GROK1_INPUT --output $merged ${merge_dump[*]} $merged.shard-*-of-$n"
  fi
fi

case "$rc" in
  0) echo "grok1-job: done $(date '+%F %T'): $GROK1_OUTPUT is complete" ;;
  3) echo "grok1-job: interrupted $(date '+%F %T'); finished results are in $GROK1_OUTPUT.partial"
     # Requeue only a job that is still running: scancel (state CANCELLED)
     # must end it, and Slurm would requeue even a finished job. Nor one
     # whose run added no result: it would requeue for ever.
     state=$(scontrol show job "$jid" 2>/dev/null | sed -n 's/^ *JobState=\([A-Z_]*\).*/\1/p')
     kept_after=$(lines "$GROK1_OUTPUT.partial")
     if [ "$kept_after" -le "$kept_before" ]; then
       echo "grok1-job: this run added no result to the $kept_before in $GROK1_OUTPUT.partial before it was stopped: not requeued, since the next run would most likely end the same way (loading the weights and the first requests in input order took longer than the job had); submit it again with a longer --time and the same GROK1_* variables to resume"
     elif [ "$state" != RUNNING ]; then
       echo "grok1-job: job $jid is ${state:-gone}, not requeued: submit it again with the same GROK1_* variables to resume"
     else
       # said first: Slurm may end this script the moment the job is requeued
       echo "grok1-job: requeueing job $jid: it will resume where it stopped"
       scontrol requeue "$jid" ||
         echo "grok1-job: could not requeue job $jid: submit it again with the same GROK1_* variables to resume"
     fi ;;
  *) echo "grok1-job: grok1-run failed with exit status $rc $(date '+%F %T'): see the lines above"
     if [ -n "$merged" ] && [ "$rc" = 1 ]; then
       echo "grok1-job: to repair this shard alone (the other tasks' shards stay valid: each records only its own requests), fix what the message names (a bad request line: fix it in $GROK1_INPUT) and run this task again: scontrol requeue $jid (while Slurm still knows the job), or submit the array again with the same GROK1_* variables (finished tasks resume with nothing to run)"
     fi ;;
esac
exit "$rc"
