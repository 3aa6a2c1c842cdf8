# btfs developer entry points. Every target installs what it needs first, so each works
# on a fresh machine: `make run` for the demo, `make test` for the suite.
VENV     ?= .venv
PY       := $(VENV)/bin/python
BTFS     := $(VENV)/bin/btfs
STAMP    := $(VENV)/.installed
DEMO     := $(CURDIR)/demo
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS := fuse3 libfuse3-dev pkg-config attr rsync e2fsprogs util-linux

.PHONY: install run test lint bench bench-quick clean demo-clean

install: $(STAMP)

# System packages only when something is missing, so a second run does no apt work.
$(STAMP): pyproject.toml
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

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

demo-clean:
	-@fusermount3 -u -z $(DEMO)/mnt 2>/dev/null; rm -rf $(DEMO)

clean: demo-clean
	rm -rf $(VENV) build *.egg-info .pytest_cache
