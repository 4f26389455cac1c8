# Sourced by the resume scripts under results/: put the committed cells of a sweep back into its run folder, so that
# a fresh clone skips the finished ones (their summaries are committed, their weights are not) and continues an
# unfinished one from its committed checkpoint.pt.
#   restore_float SRC DST   the committed float network SRC (config.json, results.json, model.pt) as the finished
#                           float run DST, unless DST has a checkpoint already
#   restore_cells SRC DST   each committed cell folder SRC/<cell>/ (except float) into DST/<cell>/, unless that cell
#                           was started in DST already (it has a config.json: what is there is as new or newer)
restore_float() {
    local src=$1 dst=$2
    [ -f "$dst/checkpoint.pt" ] && return 0
    mkdir -p "$dst"
    cp "$src/config.json" "$src/results.json" "$dst/"
    cp "$src/model.pt" "$dst/checkpoint.pt"
}
restore_cells() {
    local src=$1 dst=$2 dir cell
    for dir in "$src"/*/; do
        [ -d "$dir" ] || continue  # no cell committed: the glob stayed a pattern
        cell=$(basename "$dir")
        [ "$cell" = float ] || [ -f "$dst/$cell/config.json" ] && continue
        if [ ! -f "$dir/results.json" ] && [ ! -f "$dir/checkpoint.pt" ]; then  # it would start again, silently
            echo "restore_cells: $dir has neither results.json (finished) nor checkpoint.pt (to continue)" >&2
            return 1
        fi
        mkdir -p "$dst/$cell"
        cp "$dir"* "$dst/$cell/"
        echo "restored $dst/$cell from $dir" >&2
    done
}
