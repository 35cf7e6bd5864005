#!/usr/bin/env bash
# Build the real-face training set of the bundled model with the project's own commands, and set
# identities and clips apart for evaluation. Usage:
#   scripts/real_faces_dataset.sh FACES OUT
# FACES holds celeba/celeb_K/*.jpg (K = 0..179), utkface/*.jpg and videos/*.mp4 (the layout of the
# real-face collection described in docs/bundled_model.md); OUT gets
#   OUT/train/           the training set (images/ + aus.csv), read by `ganimation train`
#   OUT/eval_photos/     links to the held-out photos, for `ganimation evaluate --photos`
#   OUT/eval_clips.txt   the held-out clips
# Held out: CelebA identities 150-179, the last 1,000 UTKFace files by name, clips d9 and d12.
# Re-running completes an interrupted run (annotate skips what its journal holds).
set -euo pipefail
faces=${1:?usage: $0 FACES OUT}
out=${2:?usage: $0 FACES OUT}
ganimation=${GANIMATION:-ganimation}
mkdir -p "$out/eval_photos"

celeb_train=(); for k in $(seq 0 149); do celeb_train+=("$faces/celeba/celeb_$k"); done
mapfile -t utk < <(find "$faces/utkface" -maxdepth 1 -name '*.jpg' | LC_ALL=C sort)
utk_train=("${utk[@]:0:${#utk[@]}-1000}")
clips_train=(); clips_eval=()
for clip in "$faces"/videos/*.mp4; do
    case "$(basename "$clip")" in d9.mp4|d12.mp4) clips_eval+=("$clip") ;; *) clips_train+=("$clip") ;; esac
done

# Every 2nd frame of the clips: they hold the expressions the photos lack (surprise, frowns).
"$ganimation" annotate "${clips_train[@]}" --every 2 -o "$out/train"
"$ganimation" annotate "${celeb_train[@]}" "${utk_train[@]}" -o "$out/train"

# Evaluation photos: 3 per held-out CelebA identity and every 5th held-out UTKFace photo.
for k in $(seq 150 179); do
    for photo in $(find "$faces/celeba/celeb_$k" -name '*.jpg' | LC_ALL=C sort | head -3); do
        ln -sf "$(realpath "$photo")" "$out/eval_photos/celeb_${k}_$(basename "$photo")"
    done
done
for ((i = ${#utk[@]} - 1000; i < ${#utk[@]}; i += 5)); do
    ln -sf "$(realpath "${utk[$i]}")" "$out/eval_photos/$(basename "${utk[$i]}")"
done
printf '%s\n' "${clips_eval[@]}" > "$out/eval_clips.txt"
echo "training set: $out/train; evaluation photos: $out/eval_photos ($(ls "$out/eval_photos" | wc -l))"
