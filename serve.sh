#!/usr/bin/env bash
# Serve a CosyVoice2 or CosyVoice3 model dir (and the characters of a LoRA run) over HTTP: OpenAI's POST
# /v1/audio/speech, GET/POST /v1/voices, /healthz and a try-it page at /. `bash serve.sh` serves the demo recipe's
# fine-tuned model (or the stand-in) on http://127.0.0.1:8000; `bash serve.sh --model_dir exp/<tag>/model` an
# experiment's; `bash serve.sh --help` lists the options. Every option below can be given as `--name value`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ---- options and their defaults ----
model_dir=""            # model dir to serve; empty: <exp_dir>/model if it exists, else <pretrained_model_dir>
exp_dir=""              # the recipe's experiment dir (run.sh's exp/<tag>); empty: the one holding --model_dir
                        # (<exp_dir>/model), else the demo's (exp/demo_voice)
pretrained_model_dir=exp/pretrained/CosyVoice2-0.5B-tiny  # fallback model dir (as in run.sh)
characters=""           # character folders served on --model_dir (a LoRA run's <exp_dir>/characters, or one
                        # <exp_dir>/characters/<spk>; several: A:B); empty: the experiment's, for a LoRA run
host=127.0.0.1          # address to bind: loopback; 0.0.0.0 serves every interface (then set an API key)
port=8000               # port to bind; 0: a free one (the log says which)
model_name=""           # model id clients send; empty: cosyvoice2 or cosyvoice3, the model's (OpenAI's tts-1,
                        # tts-1-hd and gpt-4o-mini-tts are accepted too)
api_key=""              # require 'Authorization: Bearer KEY' on /v1/*; empty: $COSYVOICE_API_KEY if set, else none
max_input_chars=4096    # longest input text, in characters
max_upload_mb=10        # largest voice upload (POST /v1/voices), MB
max_queue=16            # requests waiting while one is synthesized; more get 503
default_format=wav      # response_format of a request that names none (wav, pcm, flac, mp3, opus)
text_frontend=true      # true: normalize the text (numbers, symbols) before synthesis
fp16=false              # true: float16 autocast on a CUDA GPU (ignored on a CPU)
warmup=true             # true: synthesize one line before serving

help_message="Usage: bash serve.sh [options]
Serve a CosyVoice2 or CosyVoice3 model dir: OpenAI-compatible POST /v1/audio/speech, GET/POST /v1/voices, GET /healthz, page at /.

Options (default in brackets):
  --model_dir DIR           model dir [${model_dir:-<exp_dir>/model if it exists, else <pretrained_model_dir>}]
  --exp_dir DIR             the recipe's experiment dir [${exp_dir:-the one holding --model_dir, else exp/demo_voice}]
  --pretrained_model_dir D  fallback model dir [${pretrained_model_dir}]
  --characters DIRS         character folders on --model_dir, A:B [${characters:-those of a LoRA experiment}]
  --host ADDR               address to bind [${host}]
  --port N                  port (0: a free one) [${port}]
  --model_name NAME         model id of the API [${model_name:-cosyvoice2 or cosyvoice3, by the model}]
  --api_key KEY             required Bearer key [${api_key:-\$COSYVOICE_API_KEY, else none}]
  --max_input_chars N       longest input text [${max_input_chars}]
  --max_upload_mb X         largest voice upload, MB [${max_upload_mb}]
  --max_queue N             waiting requests before 503 [${max_queue}]
  --default_format FMT      response_format when none is given [${default_format}]
  --text_frontend BOOL      normalize the text first [${text_frontend}]
  --fp16 BOOL               float16 on a CUDA GPU [${fp16}]
  --warmup BOOL             one synthesis before serving [${warmup}]"

cmdline="$0 $*"
. "${root}/tools/parse_options.sh"  # also defines log, die and no_arguments (tools/log.sh)
no_arguments "$@"
[[ ${port} =~ ^[0-9]+$ ]] && [ "${port}" -le 65535 ] || die "--port must be 0-65535, got '${port}'"
[[ ${max_queue} =~ ^[0-9]+$ ]] && [ "${max_queue}" -ge 1 ] || die "--max_queue must be a positive integer, got '${max_queue}'"
[[ ${max_input_chars} =~ ^[0-9]+$ ]] && [ "${max_input_chars}" -ge 1 ] \
  || die "--max_input_chars must be a positive integer, got '${max_input_chars}'"

[ -z "${api_key}" ] || cmdline=${cmdline//"${api_key}"/<hidden>}
log "${cmdline}"
. "${root}/path.sh"

. "${root}/tools/experiment.sh"
resolve_experiment

log "Serving ${model_dir}${characters:+ with the characters ${characters}} on ${host}:${port}"
# the key travels in the environment, not on the python command line (which any user can read in the process list)
[ -z "${api_key}" ] || export COSYVOICE_API_KEY="${api_key}"
exec python3 -m cosyvoice.bin.serve --model_dir "${model_dir}" --host "${host}" --port "${port}" \
  --model_name "${model_name}" --max_input_chars "${max_input_chars}" --max_upload_mb "${max_upload_mb}" \
  --max_queue "${max_queue}" --default_format "${default_format}" --text_frontend "${text_frontend}" \
  --fp16 "${fp16}" --warmup "${warmup}" "${char_args[@]}"
