# bash completion for regfs. Install as
# /usr/share/bash-completion/completions/regfs (cmake --install does), or
# source it from ~/.bashrc.

_regfs_registries() {
  # Registries named in the credentials files (hosts of "auths" keys).
  local f
  for f in "${REGISTRY_AUTH_FILE:-}" "${XDG_RUNTIME_DIR:-/nonexistent}/containers/auth.json" \
           "$HOME/.config/containers/auth.json" "${DOCKER_CONFIG:-$HOME/.docker}/config.json"; do
    [[ -r $f ]] || continue
    grep -o '"[^"]*"[[:space:]]*:[[:space:]]*{' "$f"
  done 2>/dev/null | sed 's/^"\(https\{0,1\}:\/\/\)\{0,1\}\([^"/]*\).*/\2/' |
    sed 's/^index\.docker\.io$/docker.io/' | grep '[.:]' | sort -u
}

_regfs_mounts() {
  awk '$3 == "fuse.regfs" { print $2 }' /proc/mounts 2>/dev/null
}

_regfs() {
  local cur prev words cword
  _init_completion 2>/dev/null || {
    COMPREPLY=()
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  }
  local commands="mount umount push login logout status cache --help --version"
  if ((cword == 1)); then
    COMPREPLY=($(compgen -W "$commands" -- "$cur"))
    return
  fi
  local command=${words[1]}
  case $prev in
    --cache-dir | --auth-file | --ca-cert)
      [[ $prev == --cache-dir ]] && COMPREPLY=($(compgen -d -- "$cur")) ||
        COMPREPLY=($(compgen -f -- "$cur"))
      return ;;
    --insecure | --mirror)
      COMPREPLY=($(compgen -W "$(_regfs_registries)" -- "$cur"))
      return ;;
    --platform)
      COMPREPLY=($(compgen -W "linux/amd64 linux/arm64 linux/arm/v7 linux/386 linux/ppc64le linux/s390x" -- "$cur"))
      return ;;
    --cache-size | --tag-ttl | --request-timeout | --upload-chunk-size | --push-delay | --layer-compression-level | -u | --username)
      return ;;
    --layer-compression)
      COMPREPLY=($(compgen -W "gzip zstd estargz" -- "$cur"))
      return ;;
    -o)
      COMPREPLY=($(compgen -W "allow_other cache_dir= cache_size= insecure= ca_cert= auth_file= platform= tag_ttl= mirror= upload_chunk_size= push_delay= layer_compression= layer_compression_level= allow_delete no_urls debug" -- "$cur"))
      return ;;
  esac
  case $command in
    mount)
      if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "--cache-dir --cache-size --insecure --ca-cert --auth-file --platform --tag-ttl --request-timeout --mirror --upload-chunk-size --push-delay --layer-compression --layer-compression-level --allow-delete --no-urls --foreground --debug -f -d -o --help" -- "$cur"))
      else
        COMPREPLY=($(compgen -d -- "$cur") $(compgen -W "$(_regfs_registries)" -- "$cur"))
      fi ;;
    push)
      COMPREPLY=($(compgen -d -- "$cur")) ;;
    umount | status)
      if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "--help" -- "$cur"))
      else
        COMPREPLY=($(compgen -W "$(_regfs_mounts)" -- "$cur") $(compgen -d -- "$cur"))
      fi ;;
    login)
      if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "--username -u --password-stdin --auth-file --insecure --ca-cert --debug --help" -- "$cur"))
      else
        COMPREPLY=($(compgen -W "$(_regfs_registries) docker.io ghcr.io quay.io" -- "$cur"))
      fi ;;
    logout)
      if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "--auth-file --help" -- "$cur"))
      else
        COMPREPLY=($(compgen -W "$(_regfs_registries)" -- "$cur"))
      fi ;;
    cache)
      if ((cword == 2)); then
        COMPREPLY=($(compgen -W "du prune clear --help" -- "$cur"))
      else
        COMPREPLY=($(compgen -W "--cache-dir --cache-size --help" -- "$cur"))
      fi ;;
  esac
}
complete -F _regfs regfs
