_btfs_completion() {
    local IFS=$'\n'
    local response

    response=$(env COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD=$COMP_CWORD _BTFS_COMPLETE=bash_complete $1)

    for completion in $response; do
        IFS=',' read type value <<< "$completion"

        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=($value)
            # A directory from the history: go on typing below it, no space after.
            [[ $value == */ ]] && compopt -o nospace 2>/dev/null
        fi
    done

    return 0
}

_btfs_completion_setup() {
    complete -o nosort -F _btfs_completion btfs
}

_btfs_completion_setup;
