#!/usr/bin/env bash
# Fine-tune CosyVoice2-0.5B (or Fun-CosyVoice3-0.5B) on one speaker, stage by stage. `bash run.sh` runs the bundled demo voice;
# `bash run.sh --help` lists the options. Every option below can be given as `--name value`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ---- options and their defaults ----
stage=0                 # first stage to run
stop_stage=8            # last stage to run
force=false             # true: redo finished stages even if their inputs did not change
setup_env=true          # true: create/refresh the project's .venv first (tools/setup_env.sh); false: use it as is
# data
raw_pack_dir=""         # stage -1: raw character pack (nested <name>.wav + <name>.lab, or clips + an LJSpeech or
                        # audiofolder metadata.csv) to convert; empty: no stage -1;
                        # several packs (one speaker each, trained together): P1:P2; every folder of a dataset
                        # root (a cast, experiment <root>-cast): "ROOT/*"
data_dir=${root}/local/demo_voice  # stage 0 input: pair folders <data_dir>/<train_set>/ and <data_dir>/<test_set>/;
                        # several datasets (trained together, multi-speaker): D1:D2, or a pattern "ROOT/*"
tag=""                  # experiment name: the default --data_root data/<tag> and --exp_dir exp/<tag>; empty: --spk_id,
                        # else the name of --raw_pack_dir or --data_dir (so a second dataset never mixes with the first)
data_root=""            # where the recipe writes its data (Kaldi tables <data_root>/<set>/, converted packs); empty: data/<tag>
train_set=train         # name of the training set
test_set="test"         # name of the test set
spk_id=""               # speaker id of every utterance; empty: the file-name prefix before the first '_' (a raw
                        # pack: its folder's name); several datasets: one id per dataset, A:B
min_dur=0.5             # stage 0: shortest usable clip (seconds)
max_dur=30              # stage 0: longest usable clip (seconds)
num_test=0              # clips held out for the test set when splitting a pack or a flat folder; 0: use --test_ratio
test_ratio=0.05         # share of clips held out for the test set when splitting
seed=1234               # seed of that split
drop_test_overlap=false # stage 0: true: drop test utterances that are also in the training set (same id or same
                        # audio) from the test set; false: such an overlap is an error
# model and training (used by the training and inference stages)
pretrained_model_dir=exp/pretrained/CosyVoice2-0.5B-tiny  # CosyVoice2-0.5B or Fun-CosyVoice3-0.5B files (llm.pt, flow.pt, ...)
exp_dir=""              # experiment dir (checkpoints, logs, resolved config, model dir, report); empty: exp/<tag>
                        # (a --finetune/--finetune_flow lora run with the default tag: exp/<tag>_lora)
gpus=""                 # GPU ids to train on, e.g. 0,1; empty: every visible GPU, or the CPU when there is none
train_engine=torch_ddp  # torch_ddp or deepspeed
download_model=false    # true: first download the real model into --pretrained_model_dir (needs network)
nj=2                    # parallel workers of stages 1-3
num_utts_per_parquet=1000  # rows per parquet shard (stage 3)
# model training (stages 5-7)
train_models="llm flow"  # stage 5/6: models to fine-tune, in this order (flow samples then pair with the new llm)
finetune=full           # stage 5: how the llm is fine-tuned: full (every weight) or lora (LoRA adapters of a few MB;
                        # stage 6 then writes one character folder per speaker, <exp_dir>/characters/<spk>/)
finetune_flow=full      # stage 5: how the flow is fine-tuned: full or lora
speaker_tag=auto        # stages 4-5: '<spk><|endofprompt|>' before each training text (multi-speaker SFT): auto (when
                        # the training set has several speakers), true or false
train_config=""         # stage 5: training yaml; empty: conf/cosyvoice2.yaml (cosyvoice3.yaml), or the stand-in's own (the same, tiny)
train_preset=auto       # stage 5: demo (2 epochs at lr 1e-3, a log line per update: the stand-in trains in seconds),
                        # yaml (the training yaml's schedule), or auto (demo on the stand-in, else yaml); the three
                        # options below override either
max_epoch=""            # stage 5: epochs per model; empty: from --train_preset
lr=""                   # stage 5: learning rate; empty: from --train_preset
accum_grad=""           # stage 5: batches per optimizer update; empty: the yaml's
max_frames_in_batch=""  # stage 5: dynamic batch size in mel frames; empty: the yaml's
save_per_step=""        # stage 5: also save (and run CV) every N updates; empty: the yaml's (-1: per epoch only)
log_interval=""         # stage 5: log training scalars every N updates; empty: from --train_preset
use_amp=""              # stage 5: bf16 or fp16 mixed precision (GPU); empty: float32
nproc_cpu=2             # stage 5 without a GPU: training processes (gloo)
num_workers=""          # stage 5: DataLoader workers per process; empty: 4 on GPU, 0 on the CPU
resume=false            # stage 5: true: continue an interrupted run from its newest intact checkpoint
swanlab=auto            # stage 5: auto (cloud when logged in, else local/offline), cloud, local, offline or off
sample_texts=${root}/conf/sample_texts.json  # stage 5: texts spoken after every epoch; empty: no samples
eval_every_epoch=false  # stage 5: true: after every epoch, synthesize a few test texts and log SIM (and CER)
average_num=5           # stage 6: checkpoints averaged into <exp_dir>/model/<model>.pt
merge=false             # stage 7 of a LoRA run: true: also merge the adapter into a plain, official-format
                        # <exp_dir>/model/llm.pt (for the official code and vLLM)
select_by=cv_loss       # stage 6: newest, cv_loss (lowest), sim or cer (need --eval_every_epoch true)
drop_flagged=false      # true: stages 2+ read <data_root>/<set>_filtered, the set without the utterances the quality
                        # report after stage 1 flags (<data_root>/<set>/flagged.tsv)
asr_model_dir=""        # stage 8: Whisper or Paraformer model dir for CER/WER; empty: CER/WER are reported as skipped
eval_max_utts=0         # stage 8: test texts to evaluate, spread evenly over the test set; 0: all
eval_max_token_text_ratio=""  # stage 8: speech-token cap per text token; empty: the model's default (20)

help_message="Usage: bash run.sh [options]
Fine-tune CosyVoice2-0.5B on one speaker. Without options: the whole recipe (stages 0-8) on the bundled demo voice with the tiny stand-in model.
Fun-CosyVoice3-0.5B: the same recipe with --pretrained_model_dir pointing at it (or at its stand-in exp/pretrained/CosyVoice3-0.5B-tiny);
the model is told by the dir's yaml (cosyvoice3.yaml), and the default --tag gets a _cosyvoice3 suffix.

Stages:
  -1  convert a raw character pack (--raw_pack_dir) into train/test pair folders under <data_root>/pack_pairs
   0  validate the pairs in --data_dir and write Kaldi tables <data_root>/<set>/{wav.scp,text,utt2spk,spk2utt}
   1  CAM++ speaker embeddings (campplus.onnx): <data_root>/<set>/{utt2embedding.pt,spk2embedding.pt}
   2  speech tokens (speech_tokenizer_v2.onnx; CosyVoice3: _v3): <data_root>/<set>/utt2speech_token.pt
   3  parquet shards for training: <data_root>/<set>/parquet/{data,utt2data,spk2data}.list
   4  speaker info: <exp_dir>/model/spk2info.pt, in a model dir laid out like the official one
   5  train the llm and the flow (torchrun, one process per GPU or --nproc_cpu on the CPU): <exp_dir>/<model>/
   6  average checkpoints: <exp_dir>/model/{llm,flow}.pt
   7  export the flow for deployment: <exp_dir>/model/{flow.encoder.fp32.zip,flow.decoder.estimator.fp32.onnx} (CosyVoice3: the .onnx)
   8  evaluation, base (zero-shot) vs fine-tuned (SFT): <exp_dir>/{report.html,metrics.json}

Options (default in brackets):
  --stage N                 first stage to run [${stage}]
  --stop_stage N            last stage to run [${stop_stage}]
  --force BOOL              redo finished stages [${force}]
  --setup_env BOOL          create/refresh .venv first [${setup_env}]
  --raw_pack_dir DIR        raw character pack for stage -1; several: P1:P2; every folder of ROOT: \"ROOT/*\" [${raw_pack_dir:-none}]
  --data_dir DIR            pair folders <DIR>/<train_set>/, <DIR>/<test_set>/ (or one flat folder, split by
                            --num_test/--test_ratio); several datasets: D1:D2 or \"ROOT/*\" [${data_dir}]
  --tag NAME                experiment name for the default --data_root/--exp_dir [${tag:-the speaker or data folder name}]
  --data_root DIR           where data is written [${data_root:-data/<tag>}]
  --train_set NAME          training set name [${train_set}]
  --test_set NAME           test set name [${test_set}]
  --spk_id ID               speaker id; one per dataset: A:B [${spk_id:-file-name prefix before the first _}]
  --min_dur SEC             shortest usable clip [${min_dur}]
  --max_dur SEC             longest usable clip [${max_dur}]
  --num_test N              test clips when splitting; 0: use --test_ratio [${num_test}]
  --test_ratio R            test share when splitting [${test_ratio}]
  --seed N                  split seed [${seed}]
  --drop_test_overlap BOOL  drop test utterances also in the training set instead of failing [${drop_test_overlap}]
  --pretrained_model_dir D  CosyVoice2-0.5B or Fun-CosyVoice3-0.5B model dir [${pretrained_model_dir}]
  --exp_dir DIR             experiment dir [${exp_dir:-exp/<tag>; a LoRA run with the default tag: exp/<tag>_lora}]
  --gpus IDS                GPU ids, e.g. 0,1 [${gpus:-all visible, or CPU}]
  --train_engine NAME       torch_ddp or deepspeed [${train_engine}]
  --download_model BOOL     download the real model (its version: see above) into --pretrained_model_dir first [${download_model}]
  --nj N                    parallel workers of stages 1-3 [${nj}]
  --num_utts_per_parquet N  rows per parquet shard [${num_utts_per_parquet}]
  --train_models LIST       models to fine-tune in stage 5/6, from llm and flow [${train_models}]
  --finetune MODE           llm fine-tuning: full or lora (characters/<spk>/) [${finetune}]
  --finetune_flow MODE      flow fine-tuning: full or lora [${finetune_flow}]
  --speaker_tag WHEN        multi-speaker SFT tags: auto, true or false [${speaker_tag}]
  --train_config FILE       training yaml [${train_config:-conf/cosyvoice2.yaml or conf/cosyvoice3.yaml, or the stand-in yaml}]
  --train_preset NAME       demo, yaml or auto (demo on the stand-in) [${train_preset}]
  --max_epoch N             epochs per model [${max_epoch:-from --train_preset}]
  --lr X                    learning rate [${lr:-from --train_preset}]
  --accum_grad N            batches per update [${accum_grad:-from the yaml}]
  --max_frames_in_batch N   batch size in mel frames [${max_frames_in_batch:-from the yaml}]
  --save_per_step N         also checkpoint every N updates [${save_per_step:-from the yaml}]
  --log_interval N          log training scalars every N updates [${log_interval:-from --train_preset}]
  --use_amp bf16|fp16       mixed precision [${use_amp:-off}]
  --nproc_cpu N             CPU training processes when there is no GPU [${nproc_cpu}]
  --num_workers N           data loader workers per process [${num_workers:-4 on GPU, 0 on CPU}]
  --resume BOOL             continue an interrupted stage 5 from its newest intact checkpoint [${resume}]
  --swanlab MODE            auto, cloud, local, offline or off [${swanlab}]
  --sample_texts FILE       json list of texts spoken after each epoch; empty: none [${sample_texts}]
  --eval_every_epoch BOOL   per-epoch SIM (and CER with --asr_model_dir) on a few test texts [${eval_every_epoch}]
  --average_num N           checkpoints averaged in stage 6 [${average_num}]
  --select_by WHAT          stage 6: newest, cv_loss, sim or cer [${select_by}]
  --merge BOOL              stage 7 of a LoRA run: merge the adapter into a plain <exp_dir>/model/llm.pt [${merge}]
  --drop_flagged BOOL       stages 2+ use <set>_filtered, without the flagged utterances [${drop_flagged}]
  --asr_model_dir DIR       stage 8: Whisper/Paraformer dir for CER/WER [${asr_model_dir:-none: skipped}]
  --eval_max_utts N         stage 8: test texts to evaluate; 0: all [${eval_max_utts}]
  --eval_max_token_text_ratio R  stage 8: speech-token cap per text token [${eval_max_token_text_ratio:-20}]"

cmdline="$0 $*"
orig_args=("$@")
. "${root}/tools/parse_options.sh"  # also defines log, die and no_arguments (tools/log.sh)
no_arguments "$@"
for opt in stage stop_stage num_test seed nj num_utts_per_parquet nproc_cpu average_num; do
  [[ ${!opt} =~ ^-?[0-9]+$ ]] || die "--${opt} must be an integer, got '${!opt}'"
done
case "${drop_flagged}" in true | false) ;; *) die "--drop_flagged must be true or false, got '${drop_flagged}'" ;; esac
case "${select_by}" in newest | cv_loss | sim | cer) ;; *) die "--select_by must be newest, cv_loss, sim or cer, got '${select_by}'" ;; esac
case "${train_engine}" in torch_ddp | deepspeed) ;; *) die "--train_engine must be torch_ddp or deepspeed, got '${train_engine}'" ;; esac
case "${train_preset}" in demo | yaml | auto) ;; *) die "--train_preset must be demo, yaml or auto, got '${train_preset}'" ;; esac
for opt in finetune finetune_flow; do
  case "${!opt}" in full | lora) ;; *) die "--${opt} must be full or lora, got '${!opt}'" ;; esac
done
case "${speaker_tag}" in auto | true | false) ;; *) die "--speaker_tag must be auto, true or false, got '${speaker_tag}'" ;; esac
case "${merge}" in true | false) ;; *) die "--merge must be true or false, got '${merge}'" ;; esac
[ "${merge}" = false ] || [ "${finetune}" = lora ] || \
  die "--merge true merges the LoRA adapter of a --finetune lora run; a full run's llm.pt is a plain llm.pt already"
[ "${stage}" -le "${stop_stage}" ] || die "--stage ${stage} is after --stop_stage ${stop_stage}"
[ -z "${gpus}" ] || [[ ${gpus} =~ ^[0-9]+(,[0-9]+)*$ ]] \
  || die "--gpus takes GPU ids separated by commas, e.g. 0 or 0,1 (empty: every visible GPU), got '${gpus}'"
if [ -n "${raw_pack_dir}" ] && [ "${data_dir}" != "${root}/local/demo_voice" ]; then
  die "give --raw_pack_dir or --data_dir, not both: stage -1 writes <data_root>/pack_pairs and stage 0 reads it"
fi

# ---- the model: cosyvoice2 or cosyvoice3, from the pretrained dir's yaml (or its name, when it does not exist yet);
# sets model_version, model_title, config_file, speech_tokenizer_file and stand_in_dir (cosyvoice/utils/pretrained.py)
model_vars=$(PYTHONPATH=${root} python3 -m cosyvoice.utils.pretrained --shell "${pretrained_model_dir}") || exit 2
eval "${model_vars}"
# several datasets or packs (one speaker each, trained together) are separated by ':', as their speaker ids; a
# folder pattern (P/*) stands for every folder it matches, in byte order: a whole cast from one dataset root
# expand_patterns OPTION ENTRY...: sets `expanded` to the entries, each pattern replaced by the folders it matches
expand_patterns() {
  local option=$1 entry d
  local -a matches
  shift
  expanded=()
  for entry in "$@"; do
    [ ! -d "${entry}" ] || { expanded+=("${entry}"); continue; }  # a folder whose name has * ? or [ is itself
    case "${entry}" in
      *[*?[]*)
        matches=()
        while IFS= read -r d; do
          [ ! -d "${d}" ] || matches+=("${d%/}")
        done < <(compgen -G "${entry}" | LC_ALL=C sort)
        [ "${#matches[@]}" -gt 0 ] || die "${option} ${entry}: the pattern matches no folder"
        expanded+=("${matches[@]}")
        cast_name=$(basename "$(dirname "${entry}")")-cast ;;
      *) expanded+=("${entry}") ;;
    esac
  done
}
cast_name=""            # <parent>-cast when a pattern gave the datasets: the experiment's default tag
IFS=: read -r -a data_dirs <<< "${data_dir}"
IFS=: read -r -a pack_dirs <<< "${raw_pack_dir}"
if [ -n "${raw_pack_dir}" ]; then
  expand_patterns --raw_pack_dir "${pack_dirs[@]}"; pack_dirs=("${expanded[@]}")
  raw_pack_dir=$(IFS=:; echo "${pack_dirs[*]}")
else
  expand_patterns --data_dir "${data_dirs[@]}"; data_dirs=("${expanded[@]}")
  data_dir=$(IFS=:; echo "${data_dirs[*]}")
fi
IFS=: read -r -a spk_ids <<< "${spk_id}"
if [ -n "${raw_pack_dir}" ]; then n_sets=${#pack_dirs[@]}; else n_sets=${#data_dirs[@]}; fi
[ "${n_sets}" -ge 1 ] || die "--data_dir is empty: give a pair folder (several: D1:D2)"
[ "${#spk_ids[@]}" -le 1 ] || [ "${#spk_ids[@]}" -eq "${n_sets}" ] || \
  die "--spk_id ${spk_id}: give one speaker id per dataset (${n_sets} of them, A:B), or none"
[ "${n_sets}" -eq 1 ] || [ "${#spk_ids[@]}" -ne 1 ] || \
  die "--spk_id ${spk_id}: ${n_sets} datasets need one speaker id each (A:B), or none (each dataset's own)"

# ---- the experiment: one tag per speaker/dataset, so a second dataset never reuses the first one's data or models ----
exp_suffix=""           # a LoRA run of the default experiment keeps its models apart (exp/<tag>_lora) and shares its data
if [ -z "${tag}" ]; then
  names=("${spk_ids[@]}")
  if [ -z "${spk_id}" ]; then
    if [ -n "${raw_pack_dir}" ]; then sets=("${pack_dirs[@]}"); else sets=("${data_dirs[@]}"); fi
    for d in "${sets[@]}"; do names+=("$(basename "${d%/}")"); done
  fi
  if [ -z "${spk_id}" ] && [ -n "${cast_name}" ]; then
    tag=${cast_name}
  else
    tag=$(IFS=-; echo "${names[*]}")
    # a long cast would make a name too long for the file system: the first one and how many others
    [ "${#tag}" -le 80 ] || [ "${n_sets}" -eq 1 ] || tag=${names[0]}-and-$((n_sets - 1))-more
  fi
  [ "${model_version}" = cosyvoice2 ] || tag=${tag}_${model_version}  # a v3 run never mixes with the v2 one
  tag=$(python3 -c 'import re, sys; print(re.sub(r"[^\w.-]+", "-", sys.argv[1]).strip("-.") or "exp")' "${tag}")
  # so that a LoRA run never replaces the full run's models
  [ "${finetune}" = full ] && [ "${finetune_flow}" = full ] || exp_suffix=_lora
fi
[[ ${tag} =~ ^[[:alnum:]_.-]+$ ]] && [ "${tag}" != . ] && [ "${tag}" != .. ] \
  || die "--tag must be a plain name (letters, digits, '_', '.', '-'), got '${tag}'"
[ -n "${data_root}" ] || data_root=data/${tag}
[ -n "${exp_dir}" ] || exp_dir=exp/${tag}${exp_suffix}

log "${cmdline}"
log "Experiment '${tag}': data in ${data_root}, models in ${exp_dir} (${model_title})"

# ---- one run per experiment and data dir at a time (the lock goes with the last process that holds it) ----
# lock DIR FD: hold an exclusive lock on DIR/.lock through file descriptor FD, or fail naming the holder.
lock() {
  local d=$1 fd=$2 holder
  mkdir -p "${d}" || die "cannot create ${d} (is its parent writable?)"
  eval "exec ${fd}>>\"${d}/.lock\"" || die "cannot write ${d}/.lock (is ${d} writable?)"
  if ! flock -n "${fd}"; then
    holder=$(head -c 600 "${d}/.lock" | tr '\n' ' ')
    die "${d} is in use by another run (${holder:-unknown holder}); wait for it to finish, or give another --exp_dir/--data_root (--tag)"
  fi
  printf 'PID %s: %s\n' "$$" "${cmdline}" > "${d}/.lock"
}
# (a dir is created for its lock only when this run writes into it: data_root from stage 0, exp_dir from stage 1)
[ "${stop_stage}" -lt 1 ] || lock "${exp_dir}" 8
if [ -d "${data_root}" ] || { [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; } || \
   { [ -n "${raw_pack_dir}" ] && [ "${stage}" -le -1 ]; }; then
  if ! [ -d "${exp_dir}" ] || [ "$(cd "${data_root}" 2>/dev/null && pwd -P)" != "$(cd "${exp_dir}" && pwd -P)" ]; then
    lock "${data_root}" 9
  fi
fi

# what a killed or failed earlier run left aside (nobody else uses these dirs now: we hold their locks)
rm -rf "${data_root}/.stage0.new" "${data_root}/.pack_pairs.new" "${data_root}/.pack_pairs.old" \
  "${exp_dir}/report_audio.new" "${exp_dir}/report_audio.old"

# ---- every long command runs as a child that dies with run.sh: SIGINT, SIGTERM, or SIGKILL of run.sh ----
child=""
# run CMD...: run CMD, wait for it, return its exit status.
run() {
  local me=${BASHPID}  # expanded here: in the background command it would be the child's own pid
  python3 -m cosyvoice.utils.lifeline --parent "${me}" -- "$@" &
  child=$!
  local rc=0
  wait "${child}" || rc=$?
  child=""
  return "${rc}"
}
on_signal() {
  trap - INT TERM HUP
  if [ -n "${child}" ]; then
    kill -TERM "${child}" 2>/dev/null || true
    wait "${child}" 2>/dev/null || true
  fi
  echo "run.sh: stopped by SIG$1; every process it started was stopped too" >&2
  exit $((128 + $2))
}
trap 'on_signal INT 2' INT
trap 'on_signal TERM 15' TERM
trap 'on_signal HUP 1' HUP

if [ "${setup_env}" = true ]; then
  bash "${root}/tools/setup_env.sh"
fi
. "${root}/path.sh"
# temp files of killed writers (*.tmp<pid> of processes that are gone)
for d in "${data_root}" "${exp_dir}"; do
  [ ! -d "${d}" ] || python3 -m cosyvoice.utils.fileio clean_stale "${d}"
done

# fingerprint ITEM...: a hash of the items' content (python -m cosyvoice.utils.fingerprint: 'path:P' a file or folder,
# 'list:P' a list file and every file it names, 'src:' this toolkit's code, anything else the value itself).
fingerprint() {
  python3 -m cosyvoice.utils.fingerprint --cache "${XDG_CACHE_HOME:-${HOME}/.cache}/cosyvoice-sft/sha256.tsv" "$@"
}

# holds_pairs DIR: true when DIR itself holds pair files: <utt>.normalized.txt, or audio stage 0 reads (any case).
holds_pairs() {
  has_file "$1" -maxdepth 1 \( -name '*.normalized.txt' -o -iname '*.wav' -o -iname '*.flac' -o -iname '*.ogg' \
    -o -iname '*.mp3' \)
}

# layout_hint DIR: what a folder that is not a pair folder looks like it is, and what to do with it ('' if unknown).
layout_hint() {
  if [ -f "$1/metadata.csv" ]; then
    echo " (its metadata.csv makes it an LJSpeech or Hugging Face audiofolder dataset: give it as --raw_pack_dir $1 --stage -1)"
  elif [ -f "$1/wav.scp" ]; then
    echo " (it looks like a Kaldi data dir; give the folder of the audio files and their <utt>.normalized.txt)"
  elif has_file "$1" -mindepth 2 -maxdepth 2 -name '*.normalized.txt'; then
    echo " (its folders hold pairs: give each one as a dataset of its own, all of them with --data_dir \"$1/*\")"
  elif has_file "$1" -mindepth 2 -maxdepth 4 -iname '*.lab'; then
    echo " (it holds .lab transcripts in subfolders: a raw character pack is read with --raw_pack_dir $1 --stage -1)"
  fi
}

# marker_text FINGERPRINT OUTPUT...: what a stage marker holds: the inputs' fingerprint and the outputs' identity.
marker_text() {
  echo "$1"
  shift
  local out
  for out in "$@"; do
    if [ -e "${out}" ]; then stat -L -c '%n %s %y' "${out}"; else echo "${out} missing"; fi
  done
}

# explain_rerun WHAT MARKER FINGERPRINT OUTPUT...: say why a stage that ran before runs again.
explain_rerun() {
  local what=$1 marker=$2 fp=$3 why
  shift 3
  [ -f "${marker}" ] || return 0
  if [ "${force}" = true ]; then
    why="--force true"
  else
    why=$(diff <(marker_text "${fp}" "$@") "${marker}" | sed -n 's/^< [0-9a-f]\{64\} //p; s/^< \(.*\) missing$/\1 is missing/p' \
      | head -5 | tr '\n' ';' | sed 's/;$//; s/;/; /g') || true
    why=${why:-an output changed}
  fi
  log "${what}: running again: ${why}"
}

# run_once WHAT MARKER FINGERPRINT OUTPUTS CMD...: run CMD (a command, or a function of this script) unless it
# finished before with the same inputs (FINGERPRINT) and its outputs (the names in the array variable OUTPUTS) are
# still as it left them.
run_once() {
  local what=$1 marker=$2 fp=$3
  local -n _outs=$4
  shift 4
  if [ "${force}" = false ] && [ -f "${marker}" ] && [ "$(cat "${marker}")" = "$(marker_text "${fp}" "${_outs[@]}")" ]; then
    log "${what}: already done with these inputs; skipped (--force true redoes it)"
    return 0
  fi
  explain_rerun "${what}" "${marker}" "${fp}" "${_outs[@]}"
  rm -f "${marker}"
  if declare -F "$1" >/dev/null; then "$@"; else run "$@"; fi  # a function runs its own commands with run
  mkdir -p "$(dirname "${marker}")"
  marker_text "${fp}" "${_outs[@]}" > "${marker}.tmp"
  mv "${marker}.tmp" "${marker}"
}

# check_data_dir STAGE DIR: DIR is a valid data dir made by stage 0, or fail saying so.
check_data_dir() {
  [ -f "$2/wav.scp" ] || die "stage $1: $2/wav.scp not found: run stage 0 first (--stage 0)"
  python3 "${root}/tools/validate_data_dir.py" "$2" >/dev/null
}

pack_pairs_dir=${data_root}/pack_pairs
if [ -n "${raw_pack_dir}" ]; then
  # stage -1 writes one pair folder per pack: <data_root>/pack_pairs, or pack_pairs/<k> (k = 1, 2, ...) for several
  data_dirs=()
  for k in "${!pack_dirs[@]}"; do
    if [ "${n_sets}" -eq 1 ]; then data_dirs+=("${pack_pairs_dir}"); else data_dirs+=("${pack_pairs_dir}/$((k + 1))"); fi
  done
  data_dir=$(IFS=:; echo "${data_dirs[*]}")
fi

# several datasets trained together (a cast): one with too few usable clips adds what it has (a note, no error)
in_cast=false
[ "${n_sets}" -eq 1 ] || in_cast=true

if [ "${stage}" -le -1 ] && [ "${stop_stage}" -ge -1 ]; then
  if [ -z "${raw_pack_dir}" ]; then
    log "Stage -1: nothing to convert (no --raw_pack_dir given)"
  fi
  for k in "${!pack_dirs[@]}"; do
    pack=${pack_dirs[$k]} out=${data_dirs[$k]} spk=${spk_ids[$k]:-}
    log "Stage -1: convert raw character pack: ${pack} -> ${out}/{${train_set},${test_set}}"
    [ -d "${pack}" ] || die "stage -1: --raw_pack_dir ${pack} is not a folder"
    fp=$(fingerprint "path:${pack}" src: "spk_id=${spk}" "sets=${train_set},${test_set}" \
      "split=${num_test},${test_ratio},${seed}")
    outs=("${out}/${train_set}" "${out}/${test_set}")
    mkdir -p "$(dirname "${out}")"
    run_once "Stage -1" "${out}/.stage-1.done" "${fp}" outs \
      python3 "${root}/local/convert_raw_pack.py" --pack_dir "${pack}" --out_dir "${out}" \
        --spk_id "${spk}" --train_set "${train_set}" --test_set "${test_set}" \
        --num_test "${num_test}" --test_ratio "${test_ratio}" --seed "${seed}" \
        --in_cast "${in_cast}"
  done
fi

# stage0_one DIR FLAT SPK OUT: the train and test sets of one dataset into OUT/<set> (FLAT: split DIR itself).
stage0_one() {
  local d=$1 out=$4 x
  local common=(--spk_id "$3" --min_dur "${min_dur}" --max_dur "${max_dur}" --in_cast "${in_cast}")
  if [ "$2" = true ]; then
    run python3 "${root}/local/prepare_data.py" --src_dir "${d}" --des_dir "${out}/${train_set}" \
      --test_des_dir "${out}/${test_set}" --num_test "${num_test}" --test_ratio "${test_ratio}" \
      --seed "${seed}" "${common[@]}"
  else
    for x in "${train_set}" "${test_set}"; do
      run python3 "${root}/local/prepare_data.py" --src_dir "${d}/${x}" --des_dir "${out}/${x}" "${common[@]}"
    done
  fi
}

# stage0: write both sets aside (<data_root>/.stage0.new), check them, then swap them in; a failure leaves the
# previous sets as they were. Several datasets are prepared one by one and then joined (local/merge_data_dirs.py).
stage0() {
  local new=${data_root}/.stage0.new x k
  rm -rf "${new}"
  if [ "${n_sets}" -eq 1 ]; then
    stage0_one "${data_dirs[0]}" "${flats[0]}" "${spk_ids[0]:-}" "${new}"
  else
    for k in "${!data_dirs[@]}"; do
      stage0_one "${data_dirs[$k]}" "${flats[$k]}" "${spk_ids[$k]:-}" "${new}/part${k}"
    done
    for x in "${train_set}" "${test_set}"; do
      local parts=()
      for k in "${!data_dirs[@]}"; do parts+=("${new}/part${k}/${x}"); done
      run python3 "${root}/local/merge_data_dirs.py" --out_dir "${new}/${x}" --labels "${data_dirs[@]}" -- "${parts[@]}"
    done
  fi
  for x in "${train_set}" "${test_set}"; do
    check_data_dir 0 "${new}/${x}"
  done
  local train_src=${data_dir}/${train_set} test_src=${data_dir}/${test_set}
  if [ "${n_sets}" -gt 1 ] || [ "${flats[0]}" = true ]; then train_src=${data_dir}; test_src=${data_dir}; fi
  run python3 "${root}/local/check_overlap.py" --train_dir "${new}/${train_set}" --test_dir "${new}/${test_set}" \
    --train_label "${train_src}" --test_label "${test_src}" --drop_from_test "${drop_test_overlap}"
  for x in "${train_set}" "${test_set}"; do
    if [ -e "${data_root}/${x}" ]; then mv "${data_root}/${x}" "${new}/${x}.old"; fi
    mv "${new}/${x}" "${data_root}/${x}"
  done
  rm -rf "${new}"
}

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  log "Stage 0: prepare data: ${data_dir} -> ${data_root}/{${train_set},${test_set}}/{wav.scp,text,utt2spk,spk2utt}"
  made_by="give --data_dir"
  [ -z "${raw_pack_dir}" ] || made_by="run stage -1 first (--stage -1)"
  flats=()
  paths=()
  for d in "${data_dirs[@]}"; do
    [ -d "${d}" ] || die "stage 0: data folder ${d} not found: ${made_by}"
    if [ -d "${d}/${train_set}" ] || [ -d "${d}/${test_set}" ]; then
      for x in "${train_set}" "${test_set}"; do
        [ -d "${d}/${x}" ] || die "stage 0: ${d}/${x} not found: put the ${x} pairs there"
      done
      flats+=(false)
    elif holds_pairs "${d}"; then
      log "Stage 0: ${d} is one flat folder: splitting off the ${test_set} set (--num_test/--test_ratio/--seed)"
      flats+=(true)
    else
      die "stage 0: ${d} holds neither ${train_set}/ and ${test_set}/ folders nor <utt>.wav (.flac/.ogg/.mp3) + <utt>.normalized.txt pairs$(layout_hint "${d}")"
    fi
    paths+=("path:${d}")
  done
  fp=$(fingerprint "${paths[@]}" src: "sets=${train_set},${test_set}" "spk_id=${spk_id}" \
    "dur=${min_dur},${max_dur}" "flat=${flats[*]}" "split=${num_test},${test_ratio},${seed}" "overlap=${drop_test_overlap}")
  outs=()
  for x in "${train_set}" "${test_set}"; do
    for f in wav.scp text utt2spk spk2utt utt2dur; do outs+=("${data_root}/${x}/${f}"); done
  done
  run_once "Stage 0" "${data_root}/.stage0.done" "${fp}" outs stage0
fi

# ---- the pretrained model dir, needed from stage 1 on: the real model, or the tiny stand-in by default ----
default_pretrained_model_dir=${stand_in_dir}  # the stand-in path of this model version
model_dir=${exp_dir}/model   # stage 4 output: laid out like the official model dir

# set_dir SET: the data dir stages 2+ read for SET (without the flagged utterances when --drop_flagged true)
set_dir() {
  if [ "${drop_flagged}" = true ]; then echo "${data_root}/$1_filtered"; else echo "${data_root}/$1"; fi
}
if [ "${stop_stage}" -ge 1 ]; then
  if [ "${download_model}" = true ]; then
    log "Downloading ${model_title} into ${pretrained_model_dir} (modelscope, then huggingface_hub)"
    run python3 "${root}/tools/download_pretrained.py" --model_dir "${pretrained_model_dir}" --version "${model_version}"
  elif [ "${pretrained_model_dir}" = "${default_pretrained_model_dir}" ] && \
       { [ ! -e "${pretrained_model_dir}" ] || [ -f "${pretrained_model_dir}/.stand_in.done" ]; }; then
    marker=${pretrained_model_dir}/.stand_in.done
    fp=$(fingerprint "path:${root}/tools/make_tiny_pretrained.py" "path:${root}/conf/${config_file}" "seed=1986")
    if [ -f "${marker}" ] && [ "$(cat "${marker}")" = "${fp}" ]; then
      log "Tiny stand-in pretrained dir ${pretrained_model_dir} is up to date"
    else
      log "Writing the tiny stand-in pretrained dir (random weights, NOT a real model): ${pretrained_model_dir}"
      run python3 "${root}/tools/make_tiny_pretrained.py" --version "${model_version}" --out_dir "${pretrained_model_dir}" \
        --seed 1986 --force
      echo "${fp}" > "${marker}"
    fi
  fi
  python3 -m cosyvoice.utils.pretrained "${pretrained_model_dir}" || exit 2
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  for x in "${train_set}" "${test_set}"; do
    d=${data_root}/${x}
    log "Stage 1: CAM++ speaker embeddings: ${d}/wav.scp -> ${d}/{utt2embedding.pt,spk2embedding.pt}"
    check_data_dir 1 "${d}"
    fp=$(fingerprint "path:${d}/wav.scp" "path:${d}/utt2spk" "path:${pretrained_model_dir}/campplus.onnx" src:)
    outs=("${d}/utt2embedding.pt" "${d}/spk2embedding.pt")
    run_once "Stage 1: ${x}" "${d}/.stage1.done" "${fp}" outs \
      python3 "${root}/tools/extract_embedding.py" --data_dir "${d}" \
        --onnx_path "${pretrained_model_dir}/campplus.onnx" --num_workers "${nj}"
  done
  for x in "${train_set}" "${test_set}"; do
    d=${data_root}/${x}
    log "Stage 1: data quality report: ${d} -> ${d}/{quality.tsv,quality_summary.json,flagged.tsv}$(
      [ "${drop_flagged}" = true ] && echo " and ${d}_filtered/ without the flagged utterances")"
    fp=$(fingerprint "path:${d}/wav.scp" "path:${d}/text" "path:${d}/utt2embedding.pt" src: "drop=${drop_flagged}")
    outs=("${d}/quality.tsv")
    [ "${drop_flagged}" = false ] || outs+=("${d}_filtered/wav.scp")
    run_once "Stage 1: ${x}: quality report" "${d}/.quality.done" "${fp}" outs \
      python3 "${root}/tools/data_quality.py" --data_dir "${d}" --drop_flagged "${drop_flagged}" \
        --out_dir "${d}_filtered"
  done
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  for x in "${train_set}" "${test_set}"; do
    d=$(set_dir "${x}")
    log "Stage 2: speech tokens: ${d}/wav.scp -> ${d}/utt2speech_token.pt (clips over 30 s: ${d}/skipped_speech_token.tsv)"
    check_data_dir 2 "${d}"
    fp=$(fingerprint "path:${d}/wav.scp" "path:${pretrained_model_dir}/${speech_tokenizer_file}" src:)
    outs=("${d}/utt2speech_token.pt")
    run_once "Stage 2: ${x}" "${d}/.stage2.done" "${fp}" outs \
      python3 "${root}/tools/extract_speech_token.py" --data_dir "${d}" \
        --onnx_path "${pretrained_model_dir}/${speech_tokenizer_file}" --num_workers "${nj}"
  done
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  for x in "${train_set}" "${test_set}"; do
    d=$(set_dir "${x}")
    log "Stage 3: parquet lists: ${d}/{wav.scp,text,utt2spk,*.pt} -> ${d}/parquet/{data,utt2data,spk2data}.list"
    fp=$(fingerprint "path:${d}/wav.scp" "path:${d}/text" "path:${d}/utt2spk" "path:${d}/utt2embedding.pt" \
      "path:${d}/spk2embedding.pt" "path:${d}/utt2speech_token.pt" src: "per_shard=${num_utts_per_parquet}")
    outs=("${d}/parquet/data.list" "${d}/parquet/utt2data.list" "${d}/parquet/spk2data.list")
    run_once "Stage 3: ${x}" "${d}/.stage3.done" "${fp}" outs \
      python3 "${root}/tools/make_parquet_list.py" --src_dir "${d}" --des_dir "${d}/parquet" \
        --num_utts_per_parquet "${num_utts_per_parquet}" --num_processes "${nj}"
  done
fi

# speakers: the speaker ids of the training set (stage 0), space separated
speakers() {
  local f
  f=$(set_dir "${train_set}")/spk2utt
  [ -f "${f}" ] && cut -d' ' -f1 "${f}" | tr '\n' ' ' | sed 's/ $//'
}
# use_speaker_tag: whether this run trains with speaker tags (--speaker_tag; auto: several training speakers)
use_speaker_tag() {
  if [ "${speaker_tag}" != auto ]; then echo "${speaker_tag}"; elif [ "$(speakers | wc -w)" -gt 1 ]; then echo true
  else echo false; fi
}
lora_run=false          # a LoRA run's voices are character folders, <exp_dir>/characters/<spk>/ (stage 6)
[ "${finetune}" = full ] && [ "${finetune_flow}" = full ] || lora_run=true
characters_dir=${exp_dir}/characters
# write_model_dir: stage 4's model dir (spk2info.pt and links to the pretrained files it lacks)
write_model_dir() {
  run python3 "${root}/tools/save_spk2info.py" --data_dir "$(set_dir "${train_set}")" \
    --pretrained_model_dir "${pretrained_model_dir}" --model_dir "${model_dir}" --speaker_tag "$(use_speaker_tag)"
}

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  d=$(set_dir "${train_set}")
  log "Stage 4: speaker info: ${d}/spk2embedding.pt -> ${model_dir}/spk2info.pt (+ links to ${pretrained_model_dir})"
  write_model_dir
  # inference.sh --model_dir <exp_dir>/model reads this: the experiment's speaker and its test clips (prompts); a
  # LoRA run's voices are its characters on the pretrained model
  test_abs=$(cd "$(set_dir "${test_set}")" && pwd)
  {
    printf '# written by run.sh stage 4: the defaults of inference.sh --model_dir %s\nspk_id=%s\ntest_data_dir=%s\n' \
      "${model_dir}" "${spk_ids[0]:-$(speakers | cut -d' ' -f1)}" "${test_abs}"
    if [ "${lora_run}" = true ]; then
      printf 'characters=%s\npretrained_model_dir=%s\n' "$(mkdir -p "${characters_dir}" && cd "${characters_dir}" && pwd)" \
        "$(cd "${pretrained_model_dir}" && pwd)"
    fi
  } > "${exp_dir}/recipe_data.conf.tmp"
  mv "${exp_dir}/recipe_data.conf.tmp" "${exp_dir}/recipe_data.conf"
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
  train_list=$(set_dir "${train_set}")/parquet/data.list
  cv_list=$(set_dir "${test_set}")/parquet/data.list
  for f in "${train_list}" "${cv_list}"; do
    [ -f "${f}" ] || die "stage 5: ${f} not found: run stage 3 first (--stage 3)"
  done
  [ -f "${model_dir}/spk2info.pt" ] || die "stage 5: ${model_dir}/spk2info.pt not found: run stage 4 first (--stage 4)"
  stand_in=false
  [ ! -f "${pretrained_model_dir}/.stand_in.done" ] || stand_in=true
  config=${train_config}
  if [ -z "${config}" ]; then
    # the stand-in's weights have its own tiny sizes: conf/<the version's yaml> with those widths
    if [ "${stand_in}" = true ]; then config=${pretrained_model_dir}/${config_file}; else config=${root}/conf/${config_file}; fi
  fi
  preset=${train_preset}
  if [ "${preset}" = auto ]; then
    if [ "${stand_in}" = true ]; then preset=demo; else preset=yaml; fi
  fi
  if [ "${preset}" = demo ]; then  # a couple of quick epochs, not a real fine-tuning schedule
    max_epoch=${max_epoch:-2}; lr=${lr:-1e-3}; log_interval=${log_interval:-1}
  fi
  log "Stage 5: --train_preset ${train_preset} (${preset}): ${config}$( [ "${preset}" = yaml ] && echo "'s schedule")" \
    "${max_epoch:+--max_epoch ${max_epoch} }${lr:+--lr ${lr} }${log_interval:+--log_interval ${log_interval}}"
  [ -f "${config}" ] || die "stage 5: training config ${config} not found (--train_config)"
  python3 -m cosyvoice.utils.config "${config}" || exit 2  # strict: an unknown key is one line, before torchrun
  [ -z "${gpus}" ] || export CUDA_VISIBLE_DEVICES=${gpus}
  read -r num_gpus torch_version torch_cuda < <(python3 -c \
    "import torch; print(torch.cuda.device_count(), torch.__version__, torch.version.cuda or 'none')")
  IFS=, read -r -a gpu_ids <<< "${gpus}"
  if [ "${num_gpus}" -lt "${#gpu_ids[@]}" ]; then  # GPUs asked for by id: never quietly fewer, or the CPU
    if [ "${torch_cuda}" = none ]; then
      why="this torch (${torch_version}) is a CPU-only build: install a CUDA build of torch (see README, How the environment is set up)"
    else
      why="torch ${torch_version} CUDA ${torch_cuda} sees ${num_gpus} of them (check nvidia-smi and the ids)"
    fi
    die "stage 5: --gpus ${gpus} asks for ${#gpu_ids[@]} GPU(s), but ${why}; or leave --gpus empty to train on what there is (the CPU when there is no GPU)"
  fi
  if [ "${num_gpus}" -gt 0 ]; then
    nproc=${num_gpus}; backend=nccl; workers=${num_workers:-4}; where="${num_gpus} GPU(s)"
  else
    nproc=${nproc_cpu}; backend=gloo; workers=${num_workers:-0}; where="${nproc_cpu} CPU process(es)"
  fi
  opts=(--qwen_pretrain_path "${pretrained_model_dir}/CosyVoice-BlankEN")
  [ -z "${max_epoch}" ] || opts+=(--max_epoch "${max_epoch}")
  [ -z "${lr}" ] || opts+=(--lr "${lr}")
  [ -z "${accum_grad}" ] || opts+=(--accum_grad "${accum_grad}")
  [ -z "${max_frames_in_batch}" ] || opts+=(--max_frames_in_batch "${max_frames_in_batch}")
  [ -z "${save_per_step}" ] || opts+=(--save_per_step "${save_per_step}")
  [ -z "${log_interval}" ] || opts+=(--log_interval "${log_interval}")
  [ -z "${use_amp}" ] || opts+=(--use_amp "${use_amp}")
  [ -z "${sample_texts}" ] || opts+=(--sample_texts "${sample_texts}" --sample_model_dir "${model_dir}" \
    --sample_llm "${exp_dir}/llm")
  if [ "${eval_every_epoch}" = true ]; then
    opts+=(--eval_every_epoch true --eval_model_dir "${model_dir}" --eval_data_dir "$(set_dir "${test_set}")")
    [ -z "${asr_model_dir}" ] || opts+=(--asr_model_dir "${asr_model_dir}")
  fi
  for m in ${train_models}; do
    out=${exp_dir}/${m}
    model_opts=()  # --finetune lora, and the speaker tags of a multi-speaker llm (full single-speaker runs: none)
    ft=${finetune}
    [ "${m}" = llm ] || ft=${finetune_flow}
    [ "${ft}" = full ] || model_opts+=(--finetune "${ft}")
    [ "${m}" != llm ] || [ "$(use_speaker_tag)" = false ] || model_opts+=(--speaker_tag true)
    log "Stage 5: train ${m} (${ft}${model_opts[*]:+, ${model_opts[*]}}) on ${where} (${train_engine}):" \
      "${train_list} + ${pretrained_model_dir}/${m}.pt -> ${out}/"
    marker=${exp_dir}/.stage5.${m}.done
    fp=$(fingerprint "list:${train_list}" "list:${cv_list}" "path:${config}" "path:${pretrained_model_dir}/${m}.pt" \
      "path:${model_dir}/spk2info.pt" src: "engine=${train_engine}" "nproc=${nproc}" \
      "opts=${opts[*]}${model_opts[*]:+ ${model_opts[*]}}")
    outs=("${out}/config.yaml")
    if [ "${force}" = false ] && [ -f "${marker}" ] && [ "$(cat "${marker}")" = "$(marker_text "${fp}" "${outs[@]}")" ]; then
      log "Stage 5: ${m}: already trained with these inputs; skipped (--force true retrains it)"
      continue
    fi
    explain_rerun "Stage 5: ${m}" "${marker}" "${fp}" "${outs[@]}"
    finished=false
    [ ! -f "${marker}" ] || finished=true  # the run in ${out} finished, with other inputs
    rm -f "${marker}"
    resume_opt=()
    if [ "${resume}" = true ]; then
      resume_opt=(--resume)  # train.py refuses checkpoints made from other data
    elif has_file "${out}" -maxdepth 1 -name '*.ckpt.json'; then
      [ "${force}" = true ] || [ "${finished}" = true ] || die "stage 5: ${out} holds checkpoints of an unfinished run:" \
        "--resume true continues it, --force true starts ${m} over (the old run is kept in ${out}.prev until the new one succeeds)"
      if [ -d "${out}.prev" ]; then
        rm -rf "${out:?}"  # a failed attempt at starting over: ${out}.prev still holds the last finished run
      else
        mv "${out}" "${out}.prev"
      fi
      log "Stage 5: ${m}: the inputs changed (or --force true): training again from ${pretrained_model_dir}/${m}.pt;" \
        "the previous run is kept in ${out}.prev until this one succeeds"
    fi
    port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    run python3 -m cosyvoice.bin.launch --nnodes 1 --nproc_per_node "${nproc}" \
      --master_addr 127.0.0.1 --master_port "${port}" \
      -m cosyvoice.bin.train --model "${m}" --config "${config}" --checkpoint "${pretrained_model_dir}/${m}.pt" \
      --train_data "${train_list}" --cv_data "${cv_list}" --model_dir "${out}" \
      --train_engine "${train_engine}" --deepspeed_config "${root}/conf/ds_stage2.json" --dist_backend "${backend}" \
      --num_workers "${workers}" --swanlab "${swanlab}" "${opts[@]}" "${model_opts[@]}" "${resume_opt[@]}"
    rm -rf "${out:?}.prev"
    marker_text "${fp}" "${outs[@]}" > "${marker}"
  done
  log "Stage 5: curves: tensorboard --logdir ${exp_dir} (SwanLab runs: ${exp_dir}/<model>/swanlog);" \
    "samples: ${exp_dir}/<model>/samples/epoch_*/"
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
  for m in ${train_models}; do
    [ -f "${exp_dir}/${m}/config.yaml" ] || die "stage 6: ${exp_dir}/${m} holds no training run: run stage 5 first (--stage 5)"
    ft=${finetune}
    [ "${m}" = llm ] || ft=${finetune_flow}
    if [ "${ft}" = full ]; then
      log "Stage 6: average ${average_num} checkpoints chosen by ${select_by}: ${exp_dir}/${m}/epoch_*.pt -> ${model_dir}/${m}.pt"
      run python3 -m cosyvoice.bin.average_model --src_path "${exp_dir}/${m}" --dst_model "${model_dir}/${m}.pt" \
        --num "${average_num}" --select_by "${select_by}"
      continue
    fi
    # LoRA: the averaged adapter; the flow's is also merged into the model dir's flow.pt (what stage 7 exports),
    # the llm's only on request (stage 7 --merge true): the model dir's llm.pt stays the pretrained one
    merged=()
    [ "${m}" = llm ] || merged=(--merged_model "${model_dir}/${m}.pt")
    log "Stage 6: average ${average_num} LoRA adapters chosen by ${select_by}: ${exp_dir}/${m}/epoch_*.pt ->" \
      "${exp_dir}/adapters/${m}.adapter.pt${merged[*]:+ (merged: ${model_dir}/${m}.pt)}"
    run python3 -m cosyvoice.bin.average_model --src_path "${exp_dir}/${m}" \
      --dst_model "${exp_dir}/adapters/${m}.adapter.pt" --num "${average_num}" --select_by "${select_by}" "${merged[@]}"
    if [ "${m}" = llm ] && [ -f "${model_dir}/llm.pt" ] && [ ! -L "${model_dir}/llm.pt" ]; then
      log "Stage 6: ${model_dir}/llm.pt is not the pretrained llm.pt (an earlier run or merge): linking it again"
      rm -f "${model_dir}/llm.pt"
      write_model_dir
    fi
  done
  if [ "${lora_run}" = true ]; then
    chars=(--model_dir "${model_dir}" --pretrained_model_dir "${pretrained_model_dir}" --out_dir "${characters_dir}")
    if [ "${finetune}" = lora ] && [ -f "${exp_dir}/adapters/llm.adapter.pt" ]; then
      chars+=(--llm_adapter "${exp_dir}/adapters/llm.adapter.pt" --llm_train_dir "${exp_dir}/llm")
    fi
    if [ "${finetune_flow}" = lora ] && [ -f "${exp_dir}/adapters/flow.adapter.pt" ]; then
      chars+=(--flow_adapter "${exp_dir}/adapters/flow.adapter.pt" --flow_train_dir "${exp_dir}/flow")
    elif [ -f "${model_dir}/flow.pt" ] && [ ! -L "${model_dir}/flow.pt" ]; then
      chars+=(--flow "${model_dir}/flow.pt")  # the fully fine-tuned flow of stage 6
    fi
    log "Stage 6: characters (adapter, flow, speaker entry, manifest): ${characters_dir}/{$(speakers | tr ' ' ',')}/"
    run python3 "${root}/tools/make_characters.py" "${chars[@]}"
  fi
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
  if [ "${model_version}" = cosyvoice2 ]; then exports="{flow.encoder.fp32.zip,flow.decoder.estimator.fp32.onnx}"
  else exports="flow.decoder.estimator.fp32.onnx (its DiT flow has no encoder to TorchScript, as in the official export)"; fi
  log "Stage 7: export the flow: ${model_dir}/flow.pt -> ${model_dir}/${exports}"
  [ -f "${model_dir}/flow.pt" ] || die "stage 7: ${model_dir}/flow.pt not found: run stages 4-6 first (--stage 4)"
  merge_opts=()
  if [ "${merge}" = true ]; then
    character=${characters_dir}/$(speakers | cut -d' ' -f1)
    [ -f "${character}/character.json" ] || die "stage 7: ${character} not found: run stage 6 first (--stage 6)"
    log "Stage 7: merge the LoRA adapter of ${character} into a plain ${model_dir}/llm.pt (official layout)"
    merge_opts=(--merge true --character "${character}")
  fi
  run python3 -m cosyvoice.bin.export --model_dir "${model_dir}" "${merge_opts[@]}"
  log "Stage 7: model dir ready: ${model_dir}"
fi

if [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 8 ]; then
  test_dir=$(set_dir "${test_set}")
  log "Stage 8: evaluation: ${test_dir} texts by ${pretrained_model_dir} (zero-shot) and ${model_dir} (SFT)" \
    "-> ${exp_dir}/{report.html,metrics.json}"
  check_data_dir 8 "${test_dir}"
  [ -f "${model_dir}/spk2info.pt" ] || die "stage 8: ${model_dir}/spk2info.pt not found: run stage 4 first (--stage 4)"
  ratio=${eval_max_token_text_ratio}
  threads=0
  if [ -f "${pretrained_model_dir}/.stand_in.done" ]; then
    threads=1                     # its many tiny ops run fastest on one thread
  fi
  weights=()
  for f in llm flow hift; do weights+=("path:${model_dir}/${f}.pt" "path:${pretrained_model_dir}/${f}.pt"); done
  extra=()
  eval_model_dir=${model_dir}
  if [ "${lora_run}" = true ]; then  # the fine-tuned voices are the characters, on the pretrained model
    eval_model_dir=${pretrained_model_dir}
    extra+=(--characters)
    for spk in $(speakers); do
      [ -f "${characters_dir}/${spk}/character.json" ] || die "stage 8: ${characters_dir}/${spk} not found: run stage 6 first (--stage 6)"
      extra+=("${characters_dir}/${spk}")
      weights+=("path:${characters_dir}/${spk}")
    done
  fi
  fp=$(fingerprint "${weights[@]}" "path:${model_dir}/spk2info.pt" \
    "path:$(set_dir "${train_set}")/spk2embedding.pt" "path:${test_dir}/wav.scp" "path:${test_dir}/text" \
    "path:$(set_dir "${train_set}")/wav.scp" src: "asr=${asr_model_dir}" \
    "utts=${eval_max_utts}" "ratio=${ratio}" "seed=${seed}" "spk=${spk_id}")
  [ -z "${asr_model_dir}" ] || extra+=(--asr_model_dir "${asr_model_dir}")
  [ -z "${ratio}" ] || extra+=(--max_token_text_ratio "${ratio}")
  [ "${#spk_ids[@]}" -ne 1 ] || extra+=(--spk_id "${spk_id}")
  outs=("${exp_dir}/report.html" "${exp_dir}/metrics.json")
  run_once "Stage 8" "${exp_dir}/.stage8.done" "${fp}" outs \
    python3 -m cosyvoice.bin.evaluate --pretrained_model_dir "${pretrained_model_dir}" --model_dir "${eval_model_dir}" \
      --test_data_dir "${test_dir}" --prompt_data_dir "$(set_dir "${train_set}")" --exp_dir "${exp_dir}" \
      --max_utts "${eval_max_utts}" --seed "${seed}" --num_threads "${threads}" "${extra[@]}"
  log "Stage 8: open ${exp_dir}/report.html in a browser"
fi

if [ "${stop_stage}" -ge 4 ] && [ -f "${model_dir}/spk2info.pt" ]; then
  spk=${spk_ids[0]:-}
  [ -n "${spk}" ] || spk=$(speakers | cut -d' ' -f1)
  infer="bash ${root}/inference.sh --model_dir ${model_dir} --spk_id ${spk} --test_data_dir $(set_dir "${test_set}")"
  where="model dir ${model_dir}"
  if [ "${lora_run}" = true ]; then
    where="characters ${characters_dir}/<spk>/ (on ${pretrained_model_dir}); model dir ${model_dir}"
    if has_file "${exp_dir}/llm" -maxdepth 1 -name 'epoch_*.pt'; then
      log "LoRA llm checkpoints (adapter only): $(du -h "$(ls -t "${exp_dir}"/llm/epoch_*.pt | head -1)" | cut -f1) each"
    fi
  fi
  log "Where things are (experiment '${tag}', speaker(s) $(speakers)):" \
    "${where}; samples of each epoch ${exp_dir}/<model>/samples/; curves: tensorboard --logdir ${exp_dir};" \
    "report ${exp_dir}/report.html"
  # a full fine-tuning whose averaged weights are not in the model dir yet: stage 4 linked the pretrained ones there
  untrained=()
  if [ "${lora_run}" = false ]; then
    for m in ${train_models}; do
      [ ! -L "${model_dir}/${m}.pt" ] || untrained+=("${m}")
    done
  fi
  if [ "${#untrained[@]}" -gt 0 ]; then
    parts=${untrained[*]}
    parts=${parts/ / and }
    rest=()  # this run's options without its stage range
    set -- "${orig_args[@]}"
    while [ $# -gt 0 ]; do
      case "$1" in --stage | --stop_stage) shift 2 ;; *) rest+=("$1"); shift ;; esac
    done
    log "Next: stages $((stop_stage + 1))..8, which train the ${parts} and put the fine-tuned weights into" \
      "${model_dir} (it holds the pretrained ${parts} until stage 6):"
    echo "bash $(printf '%q ' "${root}/run.sh" "${rest[@]}")--stage $((stop_stage + 1))"
    log "(inference now would speak with the pretrained ${parts} and this speaker's embedding: ${infer})"
  else
    log "Next: synthesize with this speaker (SFT, and zero-shot from one of its test clips) into" \
      "${exp_dir}/inference (or serve it over HTTP: bash ${root}/serve.sh --model_dir ${model_dir}):"
    echo "${infer}"
  fi
fi
log "Done: stages ${stage}..${stop_stage} in ${SECONDS} s"
