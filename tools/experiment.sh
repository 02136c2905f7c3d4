# Which model dir and character folders a script uses, from its --model_dir, --exp_dir, --pretrained_model_dir
# and --characters (inference.sh and serve.sh source this file; it defines functions only).
#
# resolve_experiment reads and sets these variables of the caller:
#   model_dir             empty: <exp_dir>/model when it holds a CosyVoice2/3 yaml, else pretrained_model_dir
#   exp_dir               empty: the dir holding --model_dir when that is an experiment's <exp_dir>/model (left
#                         empty otherwise); with no --model_dir either, the demo's exp/demo_voice
#   characters            empty, for a LoRA experiment: the character folders stage 6 wrote (model_dir then
#                         becomes the pretrained model they were trained on)
#   char_args             set: the Python entry points' `--characters DIR...` for characters (A:B), or nothing
# and sets recipe_spk_id and recipe_test_data_dir: what stage 4 recorded in <exp_dir>/recipe_data.conf for the
# experiment's own model dir (empty otherwise). It ends with one line (die) when the model dir does not exist.

resolve_experiment() {
  recipe_spk_id=""
  recipe_test_data_dir=""
  if [ -z "${model_dir}" ]; then
    [ -n "${exp_dir}" ] || exp_dir=exp/demo_voice
    if [ -f "${exp_dir}/model/cosyvoice2.yaml" ] || [ -f "${exp_dir}/model/cosyvoice3.yaml" ]; then
      model_dir=${exp_dir}/model
    else
      model_dir=${pretrained_model_dir}
    fi
  elif [ -z "${exp_dir}" ] && [ "$(basename "${model_dir%/}")" = model ]; then
    exp_dir=$(dirname "${model_dir%/}")
  fi
  local conf=${exp_dir:+${exp_dir}/recipe_data.conf}
  if [ -n "${conf}" ] && [ -f "${conf}" ] && [ "${model_dir%/}" = "${exp_dir%/}/model" ]; then
    read_recipe_conf "${conf}"
  fi
  [ -d "${model_dir}" ] || die "model dir ${model_dir} not found: $(how_to_get_model_dir)"
  char_args=()
  if [ -n "${characters}" ]; then
    local -a dirs
    IFS=: read -r -a dirs <<< "${characters}"
    char_args=(--characters "${dirs[@]}")
  fi
}

# read_recipe_conf FILE: the speaker, test set and (a LoRA run) characters stage 4 recorded for the experiment.
read_recipe_conf() {
  local key value recipe_characters="" recipe_base=""
  while IFS='=' read -r key value; do
    case "${key}" in
      spk_id) recipe_spk_id=${value} ;;
      test_data_dir) recipe_test_data_dir=${value} ;;
      characters) recipe_characters=${value} ;;
      pretrained_model_dir) recipe_base=${value} ;;
    esac
  done < "$1"
  # a LoRA experiment: its voices are the characters of stage 6, on the pretrained model they were trained from
  if [ -z "${characters}" ] && [ -n "${recipe_characters}" ] \
      && has_file "${recipe_characters}" -mindepth 2 -maxdepth 2 -name character.json; then
    characters=${recipe_characters}
    model_dir=${recipe_base}
    log "LoRA experiment ${exp_dir}: the characters in ${characters} on the pretrained model ${model_dir}"
  fi
}

how_to_get_model_dir() {
  if [ "$(basename "${model_dir%/}")" = model ]; then  # an experiment's: stage 4 writes it
    echo "run the recipe that writes it (bash run.sh with that experiment's options; stage 4 writes <exp_dir>/model), or give another --model_dir"
  else
    echo "run the recipe (bash run.sh), give --model_dir, or write the stand-in with: . path.sh && python tools/make_tiny_pretrained.py --out_dir ${model_dir} (CosyVoice3: add --version cosyvoice3)"
  fi
}
