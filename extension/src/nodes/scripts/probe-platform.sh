# probe-platform.sh
# The node's OS, CPU, C library and GPUs, as key=value lines, and the tools the runtime install needs.
# vulkaninfo can hang on broken drivers: bounded where `timeout` exists. A software Vulkan device
# (Mesa's lavapipe, on many GPU-less servers) is not a GPU: only real device types count, unless the
# node lists its Vulkan devices in GGML_VK_VISIBLE_DEVICES, which makes ggml use even CPU-type ones.
T=; command -v timeout >/dev/null 2>&1 && T="timeout 20"
echo "os=$(uname -s)"
echo "machine=$(uname -m)"
if command -v nvidia-smi >/dev/null 2>&1 && $T nvidia-smi -L >/dev/null 2>&1; then echo "gpu=cuda"; fi
VK='DISCRETE_GPU|INTEGRATED_GPU|VIRTUAL_GPU'; [ -n "${GGML_VK_VISIBLE_DEVICES:-}" ] && VK="$VK|CPU"
if command -v vulkaninfo >/dev/null 2>&1 && $T vulkaninfo --summary 2>/dev/null | grep -Eq "deviceType *= *PHYSICAL_DEVICE_TYPE_($VK)"; then echo "gpu=vulkan"; fi
if ldd --version 2>&1 | grep -qi musl || ls /lib/ld-musl-* >/dev/null 2>&1; then echo "musl=yes"; fi
G=$(getconf GNU_LIBC_VERSION 2>/dev/null | sed -n 's/^glibc \([0-9][0-9.]*\).*/\1/p')
[ -n "$G" ] || G=$(ldd --version 2>&1 | sed -n '1s/.* \([0-9][0-9]*\.[0-9][0-9]*\)$/\1/p')
echo "glibc=$G"
for t in tar gzip; do command -v $t >/dev/null 2>&1 || echo "missing=$t"; done
