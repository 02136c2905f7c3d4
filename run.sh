#!/usr/bin/env bash
# Fine-tune CosyVoice2-0.5B on one speaker, stage by stage. `bash run.sh` runs the bundled demo voice;
# `bash run.sh --help` lists the options. Every option below can be given as `--name value`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ---- options and their defaults ----
stage=0                 # first stage to run
stop_stage=4            # last stage to run
force=false             # true: redo finished stages even if their inputs did not change
setup_env=true          # true: create/refresh the project's .venv first (tools/setup_env.sh); false: use it as is
# data
raw_pack_dir=""         # stage -1: raw character pack (nested <name>.wav + <name>.lab) to convert; empty: no stage -1
data_dir=${root}/local/demo_voice  # stage 0 input: pair folders <data_dir>/<train_set>/ and <data_dir>/<test_set>/
data_root=data          # where the recipe writes its data: Kaldi tables <data_root>/<set>/, converted packs
train_set=train         # name of the training set
test_set="test"         # name of the test set
spk_id=""               # speaker id of every utterance; empty: the file-name prefix before the first '_'
min_dur=0.5             # stage 0: shortest usable clip (seconds)
max_dur=30              # stage 0: longest usable clip (seconds)
num_test=0              # clips held out for the test set when splitting a pack or a flat folder; 0: use --test_ratio
test_ratio=0.05         # share of clips held out for the test set when splitting
seed=1234               # seed of that split
# model and training (used by the training and inference stages)
pretrained_model_dir=exp/pretrained/CosyVoice2-0.5B-tiny  # CosyVoice2-0.5B files (llm.pt, flow.pt, hift.pt, ...)
exp_dir=exp/cosyvoice2_sft  # experiment dir: checkpoints, logs, resolved config
gpus=""                 # GPU ids to train on, e.g. 0,1; empty: every visible GPU, or the CPU when there is none
train_engine=torch_ddp  # torch_ddp or deepspeed
download_model=false    # true: first download the real CosyVoice2-0.5B into --pretrained_model_dir (needs network)
nj=2                    # parallel workers of stages 1-3
num_utts_per_parquet=1000  # rows per parquet shard (stage 3)

help_message="Usage: bash run.sh [options]
Fine-tune CosyVoice2-0.5B on one speaker. Without options: the bundled demo voice, stages 0-4.

Stages:
  -1  convert a raw character pack (--raw_pack_dir) into train/test pair folders under <data_root>/pack_pairs
   0  validate the pairs in --data_dir and write Kaldi tables <data_root>/<set>/{wav.scp,text,utt2spk,spk2utt}
   1  CAM++ speaker embeddings (campplus.onnx): <data_root>/<set>/{utt2embedding.pt,spk2embedding.pt}
   2  speech tokens (speech_tokenizer_v2.onnx): <data_root>/<set>/utt2speech_token.pt
   3  parquet shards for training: <data_root>/<set>/parquet/{data,utt2data,spk2data}.list
   4  speaker info: <exp_dir>/model/spk2info.pt, in a model dir laid out like the official one

Options (default in brackets):
  --stage N                 first stage to run [${stage}]
  --stop_stage N            last stage to run [${stop_stage}]
  --force BOOL              redo finished stages [${force}]
  --setup_env BOOL          create/refresh .venv first [${setup_env}]
  --raw_pack_dir DIR        raw character pack for stage -1 [${raw_pack_dir:-none}]
  --data_dir DIR            pair folders <DIR>/<train_set>/, <DIR>/<test_set>/ (or one flat folder, split by
                            --num_test/--test_ratio) [${data_dir}]
  --data_root DIR           where data is written [${data_root}]
  --train_set NAME          training set name [${train_set}]
  --test_set NAME           test set name [${test_set}]
  --spk_id ID               speaker id [${spk_id:-file-name prefix before the first _}]
  --min_dur SEC             shortest usable clip [${min_dur}]
  --max_dur SEC             longest usable clip [${max_dur}]
  --num_test N              test clips when splitting; 0: use --test_ratio [${num_test}]
  --test_ratio R            test share when splitting [${test_ratio}]
  --seed N                  split seed [${seed}]
  --pretrained_model_dir D  CosyVoice2-0.5B model dir [${pretrained_model_dir}]
  --exp_dir DIR             experiment dir [${exp_dir}]
  --gpus IDS                GPU ids, e.g. 0,1 [${gpus:-all visible, or CPU}]
  --train_engine NAME       torch_ddp or deepspeed [${train_engine}]
  --download_model BOOL     download the real CosyVoice2-0.5B into --pretrained_model_dir first [${download_model}]
  --nj N                    parallel workers of stages 1-3 [${nj}]
  --num_utts_per_parquet N  rows per parquet shard [${num_utts_per_parquet}]
  --config FILE             read option assignments (name=value lines) from FILE
  --help                    print this message"

cmdline="$0 $*"
. "${root}/tools/parse_options.sh"

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}
die() {
  echo "run.sh: error: $*" >&2
  exit 1
}

[ $# -eq 0 ] || die "unexpected argument '$1' (options are --name value; see --help)"
for opt in stage stop_stage num_test seed nj num_utts_per_parquet; do
  [[ ${!opt} =~ ^-?[0-9]+$ ]] || die "--${opt} must be an integer, got '${!opt}'"
done
case "${train_engine}" in torch_ddp | deepspeed) ;; *) die "--train_engine must be torch_ddp or deepspeed, got '${train_engine}'" ;; esac
[ "${stage}" -le "${stop_stage}" ] || die "--stage ${stage} is after --stop_stage ${stop_stage}"

log "${cmdline}"

if [ "${setup_env}" = true ]; then
  bash "${root}/tools/setup_env.sh"
fi
. "${root}/path.sh"

# fingerprint ITEM...: a hash of the items; an item 'path:P' stands for the file P's content, or for the names,
# sizes and times of the files under the folder P; any other item stands for itself (an option value).
fingerprint() {
  local item p
  for item in "$@"; do
    echo "${item}"
    case "${item}" in
      path:*)
        p=${item#path:}
        if [ -d "${p}" ]; then
          (cd "${p}" && find . -type f ! -name '.*done' -printf '%p %s %T@\n' | LC_ALL=C sort)
        elif [ -f "${p}" ]; then
          sha256sum < "${p}"
        fi
        ;;
    esac
  done | sha256sum | cut -d' ' -f1
}

# is_done MARKER FINGERPRINT: the stage finished with these inputs before (and --force is false).
is_done() {
  [ "${force}" = false ] && [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]
}

# check_data_dir STAGE DIR: DIR is a valid data dir made by stage 0, or fail saying so.
check_data_dir() {
  [ -f "$2/wav.scp" ] || die "stage $1: $2/wav.scp not found: run stage 0 first (--stage 0)"
  python3 "${root}/tools/validate_data_dir.py" "$2" >/dev/null
}

pack_pairs_dir=${data_root}/pack_pairs
if [ -n "${raw_pack_dir}" ]; then
  if [ "${data_dir}" != "${root}/local/demo_voice" ]; then
    die "give --raw_pack_dir or --data_dir, not both: stage -1 writes ${pack_pairs_dir} and stage 0 reads it"
  fi
  data_dir=${pack_pairs_dir}
fi

if [ "${stage}" -le -1 ] && [ "${stop_stage}" -ge -1 ]; then
  if [ -z "${raw_pack_dir}" ]; then
    log "Stage -1: nothing to convert (no --raw_pack_dir given)"
  else
    log "Stage -1: convert raw character pack: ${raw_pack_dir} -> ${pack_pairs_dir}/{${train_set},${test_set}}"
    [ -d "${raw_pack_dir}" ] || die "stage -1: --raw_pack_dir ${raw_pack_dir} is not a folder"
    marker=${pack_pairs_dir}/.stage-1.done
    fp=$(fingerprint "path:${raw_pack_dir}" "path:${root}/local/convert_raw_pack.py" "path:${root}/local/prepare_data.py" \
      "spk_id=${spk_id}" "sets=${train_set},${test_set}" "split=${num_test},${test_ratio},${seed}")
    if is_done "${marker}" "${fp}" && [ -d "${pack_pairs_dir}/${train_set}" ] && [ -d "${pack_pairs_dir}/${test_set}" ]; then
      log "Stage -1: already done for these inputs; skipped (--force true redoes it)"
    else
      rm -f "${marker}"
      python3 "${root}/local/convert_raw_pack.py" --pack_dir "${raw_pack_dir}" --out_dir "${pack_pairs_dir}" \
        --spk_id "${spk_id}" --train_set "${train_set}" --test_set "${test_set}" \
        --num_test "${num_test}" --test_ratio "${test_ratio}" --seed "${seed}"
      echo "${fp}" > "${marker}"
    fi
  fi
fi

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  log "Stage 0: prepare data: ${data_dir} -> ${data_root}/{${train_set},${test_set}}/{wav.scp,text,utt2spk,spk2utt}"
  made_by="give --data_dir"
  [ -z "${raw_pack_dir}" ] || made_by="run stage -1 first (--stage -1)"
  [ -d "${data_dir}" ] || die "stage 0: data folder ${data_dir} not found: ${made_by}"
  if [ -d "${data_dir}/${train_set}" ] || [ -d "${data_dir}/${test_set}" ]; then
    for x in "${train_set}" "${test_set}"; do
      [ -d "${data_dir}/${x}" ] || die "stage 0: ${data_dir}/${x} not found: put the ${x} pairs there"
    done
    flat=false
  elif compgen -G "${data_dir}/*.wav" >/dev/null || compgen -G "${data_dir}/*.normalized.txt" >/dev/null; then
    log "Stage 0: ${data_dir} is one flat folder: splitting off the ${test_set} set (--num_test/--test_ratio/--seed)"
    flat=true
  else
    die "stage 0: ${data_dir} holds neither ${train_set}/ and ${test_set}/ folders nor <utt>.wav + <utt>.normalized.txt pairs"
  fi
  marker=${data_root}/.stage0.done
  fp=$(fingerprint "path:${data_dir}" "path:${root}/local/prepare_data.py" "path:${root}/tools/validate_data_dir.py" \
    "sets=${train_set},${test_set}" "spk_id=${spk_id}" "dur=${min_dur},${max_dur}" "flat=${flat}" \
    "split=${num_test},${test_ratio},${seed}")
  if is_done "${marker}" "${fp}" && [ -f "${data_root}/${train_set}/wav.scp" ] && [ -f "${data_root}/${test_set}/wav.scp" ]; then
    log "Stage 0: already done for these inputs; skipped (--force true redoes it)"
  else
    rm -f "${marker}"
    common=(--spk_id "${spk_id}" --min_dur "${min_dur}" --max_dur "${max_dur}")
    if [ "${flat}" = true ]; then
      python3 "${root}/local/prepare_data.py" --src_dir "${data_dir}" --des_dir "${data_root}/${train_set}" \
        --test_des_dir "${data_root}/${test_set}" --num_test "${num_test}" --test_ratio "${test_ratio}" \
        --seed "${seed}" "${common[@]}"
    else
      for x in "${train_set}" "${test_set}"; do
        python3 "${root}/local/prepare_data.py" --src_dir "${data_dir}/${x}" --des_dir "${data_root}/${x}" "${common[@]}"
      done
    fi
    for x in "${train_set}" "${test_set}"; do
      check_data_dir 0 "${data_root}/${x}"
    done
    echo "${fp}" > "${marker}"
  fi
fi

# ---- the pretrained model dir, needed from stage 1 on: the real model, or the tiny stand-in by default ----
default_pretrained_model_dir=exp/pretrained/CosyVoice2-0.5B-tiny
model_dir=${exp_dir}/model   # stage 4 output: laid out like the official model dir
if [ "${stop_stage}" -ge 1 ]; then
  if [ "${download_model}" = true ]; then
    log "Downloading CosyVoice2-0.5B into ${pretrained_model_dir} (modelscope, then huggingface_hub)"
    python3 "${root}/tools/download_pretrained.py" --model_dir "${pretrained_model_dir}" || exit 1
  elif [ "${pretrained_model_dir}" = "${default_pretrained_model_dir}" ] && \
       { [ ! -e "${pretrained_model_dir}" ] || [ -f "${pretrained_model_dir}/.stand_in.done" ]; }; then
    marker=${pretrained_model_dir}/.stand_in.done
    fp=$(fingerprint "path:${root}/tools/make_tiny_pretrained.py" "path:${root}/conf/cosyvoice2.yaml" "seed=1986")
    if is_done "${marker}" "${fp}"; then
      log "Tiny stand-in pretrained dir ${pretrained_model_dir} is up to date"
    else
      log "Writing the tiny stand-in pretrained dir (random weights, NOT a real model): ${pretrained_model_dir}"
      python3 "${root}/tools/make_tiny_pretrained.py" --out_dir "${pretrained_model_dir}" --seed 1986 --force
      echo "${fp}" > "${marker}"
    fi
  fi
  python3 -m cosyvoice.utils.pretrained "${pretrained_model_dir}" || exit 1
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  for x in "${train_set}" "${test_set}"; do
    d=${data_root}/${x}
    log "Stage 1: CAM++ speaker embeddings: ${d}/wav.scp -> ${d}/{utt2embedding.pt,spk2embedding.pt}"
    check_data_dir 1 "${d}"
    marker=${d}/.stage1.done
    fp=$(fingerprint "path:${d}/wav.scp" "path:${d}/utt2spk" "path:${pretrained_model_dir}/campplus.onnx" \
      "path:${root}/tools/extract_embedding.py")
    if is_done "${marker}" "${fp}" && [ -f "${d}/utt2embedding.pt" ] && [ -f "${d}/spk2embedding.pt" ]; then
      log "Stage 1: ${x}: already done for these inputs; skipped (--force true redoes it)"
    else
      rm -f "${marker}"
      python3 "${root}/tools/extract_embedding.py" --data_dir "${d}" \
        --onnx_path "${pretrained_model_dir}/campplus.onnx" --num_workers "${nj}"
      echo "${fp}" > "${marker}"
    fi
  done
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  for x in "${train_set}" "${test_set}"; do
    d=${data_root}/${x}
    log "Stage 2: speech tokens: ${d}/wav.scp -> ${d}/utt2speech_token.pt (clips over 30 s: ${d}/skipped_speech_token.tsv)"
    check_data_dir 2 "${d}"
    marker=${d}/.stage2.done
    fp=$(fingerprint "path:${d}/wav.scp" "path:${pretrained_model_dir}/speech_tokenizer_v2.onnx" \
      "path:${root}/tools/extract_speech_token.py")
    if is_done "${marker}" "${fp}" && [ -f "${d}/utt2speech_token.pt" ]; then
      log "Stage 2: ${x}: already done for these inputs; skipped (--force true redoes it)"
    else
      rm -f "${marker}"
      python3 "${root}/tools/extract_speech_token.py" --data_dir "${d}" \
        --onnx_path "${pretrained_model_dir}/speech_tokenizer_v2.onnx" --num_workers "${nj}"
      echo "${fp}" > "${marker}"
    fi
  done
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  for x in "${train_set}" "${test_set}"; do
    d=${data_root}/${x}
    log "Stage 3: parquet lists: ${d}/{wav.scp,text,utt2spk,*.pt} -> ${d}/parquet/{data,utt2data,spk2data}.list"
    marker=${d}/.stage3.done
    fp=$(fingerprint "path:${d}/wav.scp" "path:${d}/text" "path:${d}/utt2spk" "path:${d}/utt2embedding.pt" \
      "path:${d}/spk2embedding.pt" "path:${d}/utt2speech_token.pt" "path:${root}/tools/make_parquet_list.py" \
      "per_shard=${num_utts_per_parquet}")
    if is_done "${marker}" "${fp}" && [ -f "${d}/parquet/data.list" ]; then
      log "Stage 3: ${x}: already done for these inputs; skipped (--force true redoes it)"
    else
      rm -f "${marker}"
      python3 "${root}/tools/make_parquet_list.py" --src_dir "${d}" --des_dir "${d}/parquet" \
        --num_utts_per_parquet "${num_utts_per_parquet}" --num_processes "${nj}"
      echo "${fp}" > "${marker}"
    fi
  done
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  d=${data_root}/${train_set}
  log "Stage 4: speaker info: ${d}/spk2embedding.pt -> ${model_dir}/spk2info.pt (+ links to ${pretrained_model_dir})"
  python3 "${root}/tools/save_spk2info.py" --data_dir "${d}" --pretrained_model_dir "${pretrained_model_dir}" \
    --model_dir "${model_dir}"
fi


log "Done: stages ${stage}..${stop_stage} in ${SECONDS} s"
