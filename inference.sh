#!/usr/bin/env bash
# Synthesize speech with a CosyVoice2 or CosyVoice3 model dir: the fine-tuned one the recipe wrote, a downloaded
# CosyVoice2-0.5B or Fun-CosyVoice3-0.5B, or a tiny stand-in (the version is told by the dir's yaml).
# `bash inference.sh` speaks the lines of local/tts_text.json in every mode; `bash inference.sh --text "..."` speaks
# one line, `--text_file script.txt` every line of a text file; `bash inference.sh --help` lists the options.
# Every option below can be given as `--name value`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ---- options and their defaults ----
mode=all                # sft, zero-shot, cross-lingual, instruct, or all (every mode the text json has)
model_dir=""            # model dir to use; empty: <exp_dir>/model if it exists, else <pretrained_model_dir>
exp_dir=""              # the recipe's experiment dir; empty: the one holding --model_dir (<exp_dir>/model), else
                        # the demo's (exp/demo_voice)
pretrained_model_dir=exp/pretrained/CosyVoice2-0.5B-tiny  # fallback model dir (as in run.sh)
text_json=${root}/local/tts_text.json  # lines to speak: {spk: {"sft_inference": [...], "zero-shot": [...], ...}}
text=""                 # one line to speak instead of the text json's (in --mode; all: sft when the model knows the
                        # speaker, zero-shot, cross-lingual, and instruct when --instruction is given)
text_file=""            # a UTF-8 text file, one line to speak per line (blank lines skipped), spoken like --text
instruction=""          # instruction of --text (--text_file: of every line) in instruct mode, e.g. 用开心的语气说
spk_id=""               # SFT speaker (and the text json section it speaks); empty: the experiment's speaker
characters=""           # character folders loaded onto --model_dir (a LoRA run's <exp_dir>/characters, or one
                        # <exp_dir>/characters/<spk>; several: A:B); empty: the experiment's, for a LoRA run
prompt_wav=""           # prompt audio (zero-shot, cross-lingual, instruct); empty: taken from --test_data_dir
prompt_text=""          # transcript of the prompt audio (zero-shot); empty: from --test_data_dir
test_data_dir=""        # Kaldi data dir or pair folder holding prompts; empty: the experiment's test set, else the demo voice
example_id=""           # utterance of --test_data_dir used as the prompt; empty: the first one
result_dir=""           # where the wavs and index.tsv go; empty: <exp_dir>/inference (exp/inference/<name> for a
                        # model dir that is not an experiment's), its text/ subfolder for --text, and its
                        # <name>/ subfolder for --text_file <name>.txt
stream=false            # true: synthesize in streaming chunks (as a server would)
speed=1.0               # speaking rate; only 1.0 with --stream true
seed=1986               # seed of every random draw
text_frontend=true      # true: normalize the text (numbers, symbols) before synthesis
fp16=false              # true: float16 autocast on a CUDA GPU (faster; ignored on a CPU, which runs float32)

help_message="Usage: bash inference.sh [options]
Synthesize the lines of a text json (or one --text line, or every line of a --text_file) with a CosyVoice2 or
CosyVoice3 model dir; one wav per line and an index.tsv.

Options (default in brackets):
  --mode MODE               sft | zero-shot | cross-lingual | instruct | all [${mode}]
  --model_dir DIR           model dir [${model_dir:-<exp_dir>/model if it exists, else <pretrained_model_dir>}]
  --exp_dir DIR             the recipe's experiment dir [${exp_dir:-the one holding --model_dir, else exp/demo_voice}]
  --pretrained_model_dir D  fallback model dir [${pretrained_model_dir}]
  --text_json FILE          lines to speak [${text_json}]
  --text LINE               one line to speak instead [${text:-none}]
  --text_file FILE          every line of a text file instead [${text_file:-none}]
  --instruction TEXT        instruction of --text / --text_file in instruct mode [${instruction:-none}]
  --spk_id ID               SFT speaker (and its json section) [${spk_id:-the speaker of the experiment}]
  --characters DIRS         character folders on --model_dir, A:B [${characters:-those of a LoRA experiment}]
  --prompt_wav FILE         prompt audio [${prompt_wav:-from --test_data_dir}]
  --prompt_text TEXT        transcript of the prompt [${prompt_text:-from --test_data_dir}]
  --test_data_dir DIR       Kaldi data dir or pair folder of prompts [${test_data_dir:-the test set of the experiment, else local/demo_voice/test}]
  --example_id ID           prompt utterance in --test_data_dir [${example_id:-the first}]
  --result_dir DIR          output folder [${result_dir:-<exp_dir>/inference; --text: its text/; --text_file F.txt: its F/}]
  --stream BOOL             streaming synthesis [${stream}]
  --speed X                 speaking rate (1.0 when streaming) [${speed}]
  --seed N                  random seed [${seed}]
  --text_frontend BOOL      normalize the text first [${text_frontend}]
  --fp16 BOOL               float16 on a CUDA GPU [${fp16}]"

cmdline="$0 $*"
. "${root}/tools/parse_options.sh"  # also defines log, die and no_arguments (tools/log.sh)
no_arguments "$@"
case "${mode}" in sft | zero-shot | cross-lingual | instruct | all) ;; *) die "--mode must be sft, zero-shot, cross-lingual, instruct or all, got '${mode}'" ;; esac
[[ ${seed} =~ ^[0-9]+$ ]] || die "--seed must be a non-negative integer, got '${seed}'"
[[ ${speed} =~ ^[0-9]*\.?[0-9]+$ ]] || die "--speed must be a positive number, got '${speed}'"
[ -z "${text}" ] || [ -z "${text_file}" ] || die "give --text LINE or --text_file FILE, not both"

log "${cmdline}"
. "${root}/path.sh"

. "${root}/tools/experiment.sh"
resolve_experiment
if [ -z "${result_dir}" ]; then
  if [ -n "${exp_dir}" ]; then result_dir=${exp_dir}/inference; else result_dir=exp/inference/$(basename "${model_dir%/}"); fi
  # a command-line line or text file goes beside, not over, the text json's wavs
  [ -z "${text}" ] || result_dir=${result_dir}/text
  if [ -n "${text_file}" ]; then
    name=$(basename "${text_file}"); name=${name%.*}
    case "${name}" in "" | .* | text) name=text_file ;; esac
    result_dir=${result_dir}/${name}
  fi
fi
# What run.sh stage 4 recorded for this experiment: its speaker and its test set (the zero-shot prompts).
[ -n "${spk_id}" ] || spk_id=${recipe_spk_id}
[ -n "${test_data_dir}" ] || [ -n "${prompt_wav}" ] || test_data_dir=${recipe_test_data_dir}
if [ -z "${prompt_wav}" ] && [ -z "${test_data_dir}" ]; then
  case "${spk_id}" in
    "" | demo) test_data_dir=${root}/local/demo_voice/test ;;
    *) [ "${mode}" = sft ] || die "no prompt for speaker '${spk_id}': give --prompt_wav (and --prompt_text) or --test_data_dir with its clips" ;;
  esac
fi

if [ -n "${text}" ]; then what="'${text}'"; text_args=(--text "${text}")
elif [ -n "${text_file}" ]; then what=${text_file}; text_args=(--text_file "${text_file}")
else what=${text_json}; text_args=(--text_json "${text_json}"); fi
log "Synthesis (${mode}): ${what} with ${model_dir} -> ${result_dir}/{*.wav,index.tsv}"
python3 -m cosyvoice.bin.inference --model_dir "${model_dir}" --mode "${mode}" "${text_args[@]}" \
  --instruction "${instruction}" \
  --spk_id "${spk_id}" --prompt_wav "${prompt_wav}" --prompt_text "${prompt_text}" \
  --test_data_dir "${test_data_dir}" --example_id "${example_id}" --result_dir "${result_dir}" \
  --stream "${stream}" --speed "${speed}" --seed "${seed}" --text_frontend "${text_frontend}" \
  --fp16 "${fp16}" "${char_args[@]}"

log "Done: ${result_dir}/index.tsv in ${SECONDS} s"
