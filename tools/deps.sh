# Sourced by tools/*.sh: makes sure the Debian packages sluice needs are installed.
# As root, missing packages are installed with apt-get; otherwise it names them.

SLUICE_DEB_PACKAGES=(
	build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
	libprotobuf-c-dev protobuf-c-compiler libzstd-dev libsodium-dev libcmocka-dev
	libpq-dev postgresql-15 postgresql-client-15
	libbson-dev libmongoc-dev python3-pymongo
)

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
