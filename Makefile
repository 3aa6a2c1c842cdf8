# btfs developer entry points. Every target installs what it needs first, so each works
# on a fresh machine: `make run` for the demo, `make test` for the suite.
VENV     ?= .venv
PY       := $(VENV)/bin/python
BTFS     := $(VENV)/bin/btfs
STAMP    := $(VENV)/.installed
DEMO     := $(CURDIR)/demo
# pyfuse3 has no wheel: pip compiles it (gcc, python3-dev, pkg-config, libfuse3-dev).
# fuse3 for mounting; attr, rsync, e2fsprogs, util-linux for the tests; systemd for
# systemd-analyze, which the tests run on the installed units.
APT_PKGS := gcc python3-dev python3-venv pkg-config libfuse3-dev fuse3 \
            attr rsync e2fsprogs util-linux systemd chromium chromium-driver
# make install-user: the launcher and the systemd user units.
BINDIR   ?= $(HOME)/.local/bin
UNITDIR  ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/systemd/user
LAUNCHER := $(abspath $(BINDIR))/btfs

.PHONY: install install-user run test lint bench bench-quick clean demo-clean status-page-shot

install: $(STAMP)

# System packages only when something is missing, so a second run does no apt work.
$(STAMP): pyproject.toml
	@sh contrib/apt-install.sh $(APT_PKGS)
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# A launcher script, not a symlink: it names the venv by absolute path and, when the
# checkout has moved or `make clean` removed the venv, says so instead of "not found".
# The units get the launcher's absolute path (the timer then runs exactly this btfs).
install-user: install
	@mkdir -p $(BINDIR) $(UNITDIR)
	@if [ -e $(LAUNCHER) ] && ! grep -qs '^# btfs launcher' $(LAUNCHER); then \
		echo "$(LAUNCHER) exists and is not a btfs launcher; move it away first" >&2; exit 1; fi
	@printf '%s\n' '#!/bin/sh' '# btfs launcher written by `make install-user` in $(CURDIR)' \
		'[ -x "$(abspath $(BTFS))" ] || { echo "btfs: $(abspath $(BTFS)) is gone; run make install-user in the checkout" >&2; exit 1; }' \
		'exec "$(abspath $(BTFS))" "$$@"' > $(LAUNCHER).tmp
	@chmod 755 $(LAUNCHER).tmp && mv -f $(LAUNCHER).tmp $(LAUNCHER)
	@sed -e 's|%h/.local/bin/btfs|$(LAUNCHER)|' \
		-e 's|^Description=.*|&\nDocumentation=file://$(CURDIR)/README.md|' \
		contrib/systemd/btfs-backup.service > $(UNITDIR)/btfs-backup.service
	@sed -e 's|%h/.local/bin/btfs|$(LAUNCHER)|' \
		-e 's|^Description=.*|&\nDocumentation=file://$(CURDIR)/README.md|' \
		contrib/systemd/btfs-watch.service > $(UNITDIR)/btfs-watch.service
	@cp contrib/systemd/btfs-backup.timer $(UNITDIR)/btfs-backup.timer
	@echo "installed $(LAUNCHER) and $(UNITDIR)/btfs-{backup.service,backup.timer,watch.service}"
	@if systemctl --user daemon-reload 2>/dev/null; then echo "systemd user manager reloaded"; \
	else echo "no systemd user manager reachable; in your session run: systemctl --user daemon-reload"; fi
	@case ":$$PATH:" in *":$(BINDIR):"*) ;; *) echo "$(BINDIR) is not on PATH: export PATH=$(BINDIR):\$$PATH";; esac

run: install
	@bash contrib/demo.sh "$(DEMO)" "$(BTFS)"

test: install
	$(PY) -m pytest -q -ra

lint: install
	$(VENV)/bin/ruff check btfs tests bench

bench: install
	@bash bench/run.sh full

bench-quick: install
	@bash bench/run.sh quick

# The README's picture of the status page: the browser test, keeping its screenshot.
status-page-shot: install
	BTFS_STATUS_PAGE_SHOT=$(CURDIR)/docs/status-page.png $(PY) -m pytest -q \
	    --basetemp=/tmp/btfs-status-page-shot tests/web/test_browser.py -k pause

demo-clean:
	-@fusermount3 -u -z $(DEMO)/mnt 2>/dev/null; rm -rf $(DEMO)

clean: demo-clean
	rm -rf $(VENV) build *.egg-info .pytest_cache
