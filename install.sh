#!/usr/bin/env bash
# Install BCCDMS as an appliance on Debian 12 / Raspberry Pi OS (bookworm): it then starts on
# power-up into the full-screen kiosk, restarts itself after crashes, and mounts USB sticks.
#
#   sudo ./install.sh [options]              install or update (safe to run again)
#   sudo ./install.sh --uninstall [--purge]  remove it; records stay unless --purge
#   DESTDIR=/tmp/root ./install.sh ...       write every file under /tmp/root and only print
#                                            what would be run (no apt, useradd, chown, systemctl)
#
# What it does: installs the Debian packages it needs (chromium, fonts-noto-core for Ethiopic
# text in the kiosk and the PDF, udisks2, python3-venv), sets the time zone (Africa/Addis_Ababa:
# dates in records and reports are the local day), creates the system user bccdms, a virtual environment under
# /opt/bccdms/venv with the appliance (runtime only, no torch), the data folder /var/lib/bccdms
# (0700), /etc/bccdms/config.toml (written once; edit it afterwards), the systemd units, the USB
# rules and the kiosk autostart; enables and starts the server, then runs 'appliance doctor'.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ORIG_ARGS="$*"
DESTDIR="${DESTDIR:-}"
PREFIX=/opt/bccdms
DATA=/var/lib/bccdms
ETC=/etc/bccdms
APP_USER=bccdms

usage() {
  cat <<EOF
Usage: sudo ./install.sh [options]
       sudo ./install.sh --uninstall [--purge]

Set-up (used only when /etc/bccdms/config.toml is written the first time):
  --post-id ID            health-post id (default: generated at first start)
  --post-name NAME        health-post name shown on reports and USB bundles
  --supervisor-key KEY    the supervisor's public key (base64) that USB exports are encrypted to
  --trusted-key KEY       a model-signing public key (base64) to trust; repeat for several
  --listen HOST:PORT      server address (default 127.0.0.1:8080; 0.0.0.0:8080 lets phones upload)
  --runtime NAME          auto | openvino | onnxruntime (default auto)
  --idle-logout MINUTES   log out of the kiosk after this many idle minutes (default 10)
  --mode MODE             demo | clinical (clinical refuses demo model packs; default demo)
  --timezone ZONE         the box's time zone (default Africa/Addis_Ababa; "keep" leaves it as it is)
Installation:
  --prefix DIR            where the program goes (default /opt/bccdms)
  --wheels DIR            install Python packages only from DIR (an offline box; see the admin guide)
  --no-apt                do not install Debian packages
  --no-kiosk              no full-screen browser (a server-only box, e.g. the supervisor's)
  --kiosk-user USER       log USER into the desktop automatically at power-up (LightDM)
Removal:
  --uninstall             remove the program, units and rules; keep records and configuration
  --purge                 with --uninstall: also delete /var/lib/bccdms, /etc/bccdms and the user
Environment: DESTDIR=DIR installs into DIR without touching the running system.
EOF
}

say()  { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die()  { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
# Commands that change the running system are printed, not run, when installing into DESTDIR.
run()  { if [ -n "$DESTDIR" ]; then printf '    would run:'; printf ' %q' "$@"; printf '\n'; else "$@"; fi; }
dest() { printf '%s%s' "$DESTDIR" "$1"; }

POST_ID="" POST_NAME="Health post" SUPERVISOR_KEY="" HOST=127.0.0.1 PORT=8080 RUNTIME=auto IDLE=10
MODE=demo WHEELS="" APT=1 KIOSK=1 KIOSK_USER="" UNINSTALL=0 PURGE=0 TIMEZONE=Africa/Addis_Ababa
TRUSTED_KEYS=()
SETUP_GIVEN=0

while [ $# -gt 0 ]; do
  opt="$1"
  case "$opt" in
    --post-id|--post-name|--supervisor-key|--trusted-key|--listen|--runtime|--idle-logout|--mode|--prefix|--wheels|--kiosk-user|--timezone)
      [ $# -ge 2 ] || die "$opt needs a value (see --help)."
      val="$2"; shift 2 ;;
    *) val=""; shift ;;
  esac
  case "$opt" in
    --post-id) POST_ID="$val"; SETUP_GIVEN=1 ;;
    --post-name) POST_NAME="$val"; SETUP_GIVEN=1 ;;
    --supervisor-key) SUPERVISOR_KEY="$val"; SETUP_GIVEN=1 ;;
    --trusted-key) TRUSTED_KEYS+=("$val"); SETUP_GIVEN=1 ;;
    --listen) HOST="${val%:*}"; PORT="${val##*:}"; SETUP_GIVEN=1 ;;
    --runtime) RUNTIME="$val"; SETUP_GIVEN=1 ;;
    --idle-logout) IDLE="$val"; SETUP_GIVEN=1 ;;
    --mode) MODE="$val"; SETUP_GIVEN=1 ;;
    --prefix) PREFIX="$val"; [ "$PREFIX" = / ] || PREFIX="${PREFIX%/}" ;;
    --wheels) WHEELS="$val" ;;
    --kiosk-user) KIOSK_USER="$val" ;;
    --timezone) TIMEZONE="$val" ;;
    --no-apt) APT=0 ;;
    --no-kiosk) KIOSK=0 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $opt (see --help)." ;;
  esac
done

# -- checks before anything changes ------------------------------------------------------------
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path." ;; esac
[ "$PREFIX" != "/" ] || die "--prefix / would put the appliance's files everywhere; use a folder of its own."
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge goes with --uninstall."
case "$PORT" in ''|*[!0-9]*) die "--listen needs HOST:PORT with a numeric port." ;; esac
if [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then die "the port $PORT is out of range (1-65535)."; fi
case "$IDLE" in ''|*[!0-9]*) die "--idle-logout needs a whole number of minutes." ;; esac
case "$RUNTIME" in auto|openvino|onnxruntime) ;; *) die "--runtime must be auto, openvino or onnxruntime." ;; esac
case "$MODE" in demo|clinical) ;; *) die "--mode must be demo or clinical." ;; esac
if [ "$TIMEZONE" != keep ]; then
  case "$TIMEZONE" in ''|/*|*..*) die "--timezone needs a zone name such as Africa/Addis_Ababa." ;; esac
  [ -f "/usr/share/zoneinfo/$TIMEZONE" ] || die "the time zone $TIMEZONE is not known (see /usr/share/zoneinfo)."
fi
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
  die "run it as root: sudo ./install.sh $ORIG_ARGS (or set DESTDIR to try it into a folder)."
fi
if [ -n "$DESTDIR" ]; then
  case "$DESTDIR" in /*) ;; *) die "DESTDIR must be an absolute path." ;; esac
  say "installing into DESTDIR=$DESTDIR (nothing on this system is changed)"
fi

IS_PI=0
if grep -qs "Raspberry Pi" /proc/device-tree/model; then IS_PI=1; fi

# Files the appliance installs outside PREFIX and the data folder (removed by --uninstall).
UNIT_DIR=/etc/systemd/system
USER_UNIT_DIR=/etc/systemd/user
SYSTEM_FILES=(
  "$UNIT_DIR/bccdms.service"
  "$UNIT_DIR/bccdms-usb-mount@.service"
  /etc/udev/rules.d/90-bccdms-usb.rules
  /etc/polkit-1/rules.d/50-bccdms-udisks.rules
  "$USER_UNIT_DIR/bccdms-kiosk.service"
  /etc/xdg/autostart/bccdms-kiosk.desktop
  /etc/lightdm/lightdm.conf.d/50-bccdms-autologin.conf
  /usr/local/bin/appliance
)

# -- uninstall ---------------------------------------------------------------------------------
uninstall() {
  say "stopping and disabling the BCCDMS services"
  run systemctl disable --now bccdms.service || true
  run systemctl stop 'bccdms-usb-mount@*.service' || true
  run systemctl --global disable bccdms-kiosk.service || true
  say "removing the program and its system files"
  for f in "${SYSTEM_FILES[@]}"; do rm -f "$(dest "$f")"; done
  rm -f "$(dest "$USER_UNIT_DIR/graphical-session.target.wants/bccdms-kiosk.service")"
  rm -rf "$(dest "$PREFIX/venv")" "$(dest "$PREFIX/app")" "$(dest "$PREFIX/bin")"
  rmdir "$(dest "$PREFIX")" 2>/dev/null || true
  run systemctl daemon-reload || true
  run udevadm control --reload-rules || true
  if [ "$PURGE" = 1 ]; then
    if [ -t 0 ]; then
      printf 'This deletes every patient record and image in %s. Type PURGE to go on: ' "$DATA"
      read -r answer
      [ "$answer" = PURGE ] || die "nothing deleted."
    fi
    say "deleting the records ($DATA), the configuration ($ETC) and the user $APP_USER"
    rm -rf "$(dest "${DATA:?}")" "$(dest "${ETC:?}")"
    if id "$APP_USER" >/dev/null 2>&1 || [ -n "$DESTDIR" ]; then run userdel "$APP_USER" || true; fi
  else
    say "kept the records in $DATA and the configuration in $ETC (--purge deletes them)"
  fi
  say "BCCDMS is uninstalled."
}

if [ "$UNINSTALL" = 1 ]; then uninstall; exit 0; fi

# -- Debian packages ---------------------------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if [ "$APT" = 1 ]; then
  # fonts-noto-core on every box, kiosk or not: the PDF report embeds its Ethiopic font.
  wanted=(python3-venv udisks2 fonts-noto-core)
  [ "$IS_PI" = 1 ] && wanted+=(python3-picamera2)
  missing=()
  for p in "${wanted[@]}"; do installed "$p" || missing+=("$p"); done
  if [ "$KIOSK" = 1 ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    missing+=(chromium)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    run apt-get update -qq || note "apt-get update failed; trying with the package lists already here"
    run apt-get install -y "${missing[@]}"
  fi
fi

# -- time zone ---------------------------------------------------------------------------------
# Records keep UTC times; the kiosk, the reports and the statistics show the local day (an exam
# at 22:30 UTC is the next day in Ethiopia), so the box must know where it is.
if [ "$TIMEZONE" != keep ]; then
  current_zone="$(readlink /etc/localtime 2>/dev/null | sed 's|.*/zoneinfo/||')"
  if [ -n "$DESTDIR" ] || [ "$current_zone" != "$TIMEZONE" ]; then
    say "setting the time zone to $TIMEZONE"
    # Without a running systemd (a chroot while imaging a card) the link is set by hand.
    run timedatectl set-timezone "$TIMEZONE" 2>/dev/null || {
      ln -sf "/usr/share/zoneinfo/$TIMEZONE" /etc/localtime && printf '%s\n' "$TIMEZONE" > /etc/timezone; }
  fi
fi

# -- user and folders --------------------------------------------------------------------------
if [ -n "$DESTDIR" ] || ! id "$APP_USER" >/dev/null 2>&1; then
  say "creating the system user $APP_USER"
  run useradd --system --user-group --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin \
      --comment "BCCDMS appliance" "$APP_USER"
fi
# The camera devices belong to group video (and render on some boards).
for group in video render; do
  if getent group "$group" >/dev/null; then run usermod -aG "$group" "$APP_USER"; fi
done

say "data folder $DATA (patient records: readable by $APP_USER only)"
mkdir -p "$(dest "$DATA")"
chmod 0700 "$(dest "$DATA")"
run chown "$APP_USER:$APP_USER" "$DATA"
# Files a technician once created as root would be unreadable or undeletable by the service.
if [ -z "$DESTDIR" ]; then find "$DATA" ! -user "$APP_USER" -exec chown -h "$APP_USER:$APP_USER" {} +; fi
mkdir -p "$(dest /media/bccdms)"
chmod 0755 "$(dest /media/bccdms)"

# -- the program -------------------------------------------------------------------------------
say "copying the appliance to $PREFIX/app"
app="$(dest "$PREFIX/app")"
mkdir -p "$app"
# weights/ stays: it holds the demo pack built or copied earlier.
rm -rf "$app/appliance" "$app/kiosk" "$app/export" "$app/docs"
tar -C "$SRC" --exclude=__pycache__ --exclude='*.pyc' -cf - \
    appliance kiosk export docs pyproject.toml README.md | tar -C "$app" -xf -
if [ -d "$SRC/weights/cards" ]; then mkdir -p "$app/weights" && cp -R "$SRC/weights/cards" "$app/weights/"; fi

venv="$PREFIX/venv"
site=()
# On a Pi the camera library comes from Raspberry Pi OS (python3-picamera2, built against libcamera).
[ "$IS_PI" = 1 ] && site=(--system-site-packages)
pip_src=()
[ -n "$WHEELS" ] && pip_src=(--no-index --find-links "$WHEELS")
say "virtual environment $venv (runtime only, no torch)"
if [ ! -x "$(dest "$venv/bin/python")" ]; then run python3 -m venv "${site[@]}" "$venv"; fi
# Editable from $PREFIX/app: the kiosk's templates, static files and translations are read from
# beside the package, as in a checkout.
run "$venv/bin/python" -m pip install --quiet "${pip_src[@]}" --editable "$PREFIX/app"
# The service cannot write under /opt (ProtectSystem=strict): compile the bytecode now, or every
# start would compile it again in memory (seconds on a Pi).
run "$venv/bin/python" -m compileall -q "$PREFIX/app/appliance" "$PREFIX/app/export"

install -d -m 0755 "$(dest "$PREFIX/bin")"
install -m 0755 "$SRC/kiosk/launcher/bccdms-kiosk" "$(dest "$PREFIX/bin/bccdms-kiosk")"
install -m 0755 "$SRC/systemd/bccdms-usb-mount" "$(dest "$PREFIX/bin/bccdms-usb-mount")"

# -- configuration (written once) --------------------------------------------------------------
install -d -m 0750 "$(dest "$ETC")"
run chown "root:$APP_USER" "$ETC"
config="$(dest "$ETC/config.toml")"
if [ -f "$config" ]; then
  say "keeping the existing configuration $ETC/config.toml"
  [ "$SETUP_GIVEN" = 1 ] && note "the set-up options given now were NOT applied: edit $ETC/config.toml instead"
else
  say "writing the configuration $ETC/config.toml"
  POST_ID="$POST_ID" POST_NAME="$POST_NAME" MODE="$MODE" HOST="$HOST" PORT="$PORT" IDLE="$IDLE" \
  RUNTIME="$RUNTIME" SUPERVISOR_KEY="$SUPERVISOR_KEY" TRUSTED_KEYS="$(printf '%s\n' "${TRUSTED_KEYS[@]}")" \
  python3 - "$SRC/systemd/config.toml.in" "$config.tmp" <<'PY'
import json, os, sys, tomllib
text = open(sys.argv[1], encoding="utf-8").read()
s = lambda v: json.dumps(v, ensure_ascii=False)   # a JSON string is a valid TOML basic string
keys = [k.strip() for k in os.environ["TRUSTED_KEYS"].splitlines() if k.strip()]
values = {"POST_ID": s(os.environ["POST_ID"]), "POST_NAME": s(os.environ["POST_NAME"]),
          "MODE": s(os.environ["MODE"]), "HOST": s(os.environ["HOST"]), "PORT": os.environ["PORT"],
          "IDLE": os.environ["IDLE"], "RUNTIME": s(os.environ["RUNTIME"]),
          "SUPERVISOR_KEY": s(os.environ["SUPERVISOR_KEY"]), "TRUSTED_KEYS": "[" + ", ".join(map(s, keys)) + "]"}
for name, value in values.items():
    text = text.replace(f"@{name}@", value)
tomllib.loads(text)   # never write a file the appliance cannot read
open(sys.argv[2], "w", encoding="utf-8").write(text)
PY
  chmod 0640 "$config.tmp"
  mv "$config.tmp" "$config"
  run chown "root:$APP_USER" "$ETC/config.toml"
fi

# -- units, rules, kiosk -----------------------------------------------------------------------
put() {  # put SOURCE TARGET MODE: install a file, with /opt/bccdms replaced by the prefix
  install -d -m 0755 "$(dirname "$(dest "$2")")"
  sed "s|/opt/bccdms|$PREFIX|g" "$1" > "$(dest "$2").tmp"
  chmod "$3" "$(dest "$2").tmp"
  mv "$(dest "$2").tmp" "$(dest "$2")"
}
say "installing the systemd units, the USB rules and the appliance command"
put "$SRC/systemd/bccdms.service" "$UNIT_DIR/bccdms.service" 0644
put "$SRC/systemd/bccdms-usb-mount@.service" "$UNIT_DIR/bccdms-usb-mount@.service" 0644
put "$SRC/systemd/90-bccdms-usb.rules" /etc/udev/rules.d/90-bccdms-usb.rules 0644
put "$SRC/systemd/50-bccdms-udisks.rules" /etc/polkit-1/rules.d/50-bccdms-udisks.rules 0644
put "$SRC/systemd/appliance-wrapper" /usr/local/bin/appliance 0755
if [ "$KIOSK" = 1 ]; then
  say "installing the kiosk browser (starts with the desktop session)"
  put "$SRC/systemd/bccdms-kiosk.service" "$USER_UNIT_DIR/bccdms-kiosk.service" 0644
  put "$SRC/kiosk/launcher/bccdms-kiosk.desktop" /etc/xdg/autostart/bccdms-kiosk.desktop 0644
  if [ -n "$KIOSK_USER" ]; then
    say "logging $KIOSK_USER into the desktop at power-up"
    install -d -m 0755 "$(dest /etc/lightdm/lightdm.conf.d)"
    printf '# BCCDMS: start the kiosk at power-up without a login.\n[Seat:*]\nautologin-user=%s\n' \
      "$KIOSK_USER" > "$(dest /etc/lightdm/lightdm.conf.d/50-bccdms-autologin.conf)"
  fi
  # Raspberry Pi OS bookworm (wayfire or labwc): screen blanking is switched off here; the
  # launcher does it for X11 sessions.
  if [ -n "$DESTDIR" ] || command -v raspi-config >/dev/null; then
    run raspi-config nonint do_blanking 1 || true
  fi
else
  rm -f "$(dest "$USER_UNIT_DIR/bccdms-kiosk.service")" "$(dest /etc/xdg/autostart/bccdms-kiosk.desktop)"
fi

# -- a model pack ------------------------------------------------------------------------------
demo="$PREFIX/app/weights/demo"
if [ "$MODE" = clinical ]; then
  note "clinical mode: install a trained, signed pack with 'sudo appliance models install PATH'"
elif [ -f "$(dest "$demo/manifest.json")" ]; then
  note "the demo model pack is in place ($demo)"
elif [ -f "$SRC/weights/demo/manifest.json" ]; then
  say "copying the demo model pack to $demo"
  mkdir -p "$(dest "$demo")" && cp -R "$SRC/weights/demo/." "$(dest "$demo")/"
elif [ -x "$SRC/.venv/bin/bccdms-export" ] && "$SRC/.venv/bin/python" -c 'import torch, export.demo' 2>/dev/null; then
  say "building the demo model pack into $demo (a few minutes)"
  run "$SRC/.venv/bin/bccdms-export" demo --out "$(dest "$demo")"
else
  note "no model pack yet. Either install a signed pack from a USB stick:"
  note "    sudo appliance models install /media/bccdms/<stick>/<pack>"
  note "or build the demo pack on a development machine ('./start.sh --install-only', which builds"
  note "weights/demo) and run this installer again from that checkout."
fi

# -- start -------------------------------------------------------------------------------------
say "enabling and (re)starting the server"
run systemctl daemon-reload
run udevadm control --reload-rules
run systemctl enable bccdms.service
run systemctl restart bccdms.service
[ "$KIOSK" = 1 ] && run systemctl --global enable bccdms-kiosk.service

if [ -z "$DESTDIR" ]; then
  url_host="$HOST"; case "$url_host" in 0.0.0.0|"") url_host=127.0.0.1 ;; esac
  say "waiting for the appliance to answer"
  for _ in $(seq 1 90); do
    if python3 -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)" \
         "http://$url_host:$PORT/healthz?live=1" 2>/dev/null; then break; fi
    sleep 2
  done
  say "self-check (appliance doctor)"
  /usr/local/bin/appliance doctor || note "fix the FAIL lines above, then run: sudo appliance doctor"
  say "done: the kiosk opens at the next desktop login (or reboot); http://$url_host:$PORT/"
else
  say "done (DESTDIR=$DESTDIR)"
fi
