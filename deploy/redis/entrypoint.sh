#!/bin/sh
# Renders the NovaPulse Redis users (users.acl.template next to this script, or $ACL_TEMPLATE) into
# $ACL_FILE (default /tmp/users.acl), replacing every ${REDIS_PASSWORD_<NAME>} with that environment
# variable and dropping the comment lines, then starts redis-server with the rendered file and any arguments given:
#   REDIS_PASSWORD_ADMIN=... REDIS_PASSWORD_AUTH=... deploy/redis/entrypoint.sh --appendonly yes
# A missing or empty password, or one with a space or '#', stops it with one line and status 2.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
template=${ACL_TEMPLATE:-$here/users.acl.template}
out=${ACL_FILE:-/tmp/users.acl}
umask 077
awk '
  /^[[:space:]]*(#|$)/ { next }   # Redis ACL files have no comments: drop them and blank lines
  {
    line = $0
    while (match(line, /\$\{REDIS_PASSWORD_[A-Z]+\}/)) {
      name = substr(line, RSTART + 2, RLENGTH - 3)
      value = ENVIRON[name]
      if (value == "" || value ~ /[ #\t]/) {
        print "redis acl: " name " must be set, without spaces or #" > "/dev/stderr"
        exit 2
      }
      line = substr(line, 1, RSTART - 1) value substr(line, RSTART + RLENGTH)
    }
    print line
  }
' "$template" > "$out"
exec redis-server "$@" --aclfile "$out"
