# Sourced by tools/*.sh: makes sure the Debian packages sluice needs are installed.
# As root, missing packages are installed with apt-get; otherwise it names them.

SLUICE_DEB_PACKAGES=(
	build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
	libprotobuf-c-dev protobuf-c-compiler libzstd-dev libsodium-dev libcmocka-dev
	libpq-dev postgresql-15 postgresql-client-15
	libbson-dev libmongoc-dev python3-pymongo
	libcurl4-openssl-dev
	libnats-dev nats-server
	libyaml-dev libmicrohttpd-dev
)

# The S3 test server (npm); its tests are skipped when it is missing.
SLUICE_S3RVER_VERSION=3.7.1

sluice_missing_packages() {
	local p missing=()
	for p in "${SLUICE_DEB_PACKAGES[@]}"; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
			missing+=("$p")
		fi
	done
	echo "${missing[@]:-}"
}

sluice_install_deps() {
	local missing
	missing=$(sluice_missing_packages)
	if [ -z "$missing" ]; then
		return 0
	fi
	if [ "$(id -u)" -ne 0 ]; then
		echo "sluice: missing Debian packages: $missing" >&2
		echo "sluice: install them with: sudo apt-get install -y $missing" >&2
		return 1
	fi
	echo "sluice: installing missing packages: $missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# sluice_install_s3rver installs s3rver (Node.js from Debian, then npm) when run as root.
sluice_install_s3rver() {
	if command -v s3rver >/dev/null 2>&1; then
		return 0
	fi
	if [ "$(id -u)" -ne 0 ]; then
		echo "sluice: s3rver is missing (S3 tests are skipped); install it with:" >&2
		echo "sluice:   sudo npm install -g s3rver@$SLUICE_S3RVER_VERSION" >&2
		return 0
	fi
	if ! command -v npm >/dev/null 2>&1; then
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null || return 0
	fi
	echo "sluice: installing s3rver $SLUICE_S3RVER_VERSION (npm)" >&2
	npm install -g --no-fund --no-audit "s3rver@$SLUICE_S3RVER_VERSION" >/dev/null || true
}
