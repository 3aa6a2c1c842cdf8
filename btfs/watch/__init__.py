"""`btfs watch`: the always-on daemon. inotify events settle into subtree backups run
through `Repo`; a periodic full scan catches what events cannot (overflow, watch limit,
changes while not running). Modules: settings (the [watch] table), settle (the pure
scheduling model), inotify (the kernel watches), control (socket and sd_notify), daemon
(the trio main)."""
