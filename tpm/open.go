package tpm

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"go.uber.org/zap"
)

// DefaultDevice is the kernel's TPM resource manager, which lets several
// processes share the TPM and swaps loaded objects in and out for each of them.
const DefaultDevice = "/dev/tpmrm0"

// ErrBadSpec is returned by Open for a TPM string it does not understand: a
// configuration mistake rather than a TPM problem.
var ErrBadSpec = errors.New("TPM not understood")

// Open connects to the TPM named by spec and prepares it for use:
//
//   - "" or "/dev/tpmrm0": the kernel resource manager (the service user needs
//     the tss group);
//   - another path such as "/dev/tpm0": a raw device, with a warning, because
//     without a resource manager stale objects of other programs fill its slots;
//   - "unix:PATH": swtpm's unixio server socket;
//   - "tcp:HOST:PORT": swtpm's TCP server port, or `iotemu tpm`.
//
// The socket forms carry plain TPM commands; a TPM there that was never started
// is sent TPM2_Startup(CLEAR).
func Open(spec string, opts Options) (*TPM, error) {
	log := opts.logger()
	tg, err := parseSpec(spec)
	if err != nil {
		return nil, err
	}
	spec = tg.String()
	var tr transport.TPMCloser
	switch tg.network {
	case "tcp", "unix":
		tr, err = dialStream(tg.network, tg.addr, spec)
	default:
		if tg.addr != DefaultDevice {
			log.Warn("using a TPM device without the kernel resource manager; objects left by other programs can fill its few slots",
				zap.String("device", tg.addr), zap.String("recommended", DefaultDevice))
		}
		tr, err = openDevice(tg.addr)
	}
	if err != nil {
		return nil, err
	}
	t, err := New(tr, opts)
	if err != nil {
		_ = tr.Close()
		return nil, err
	}
	t.spec = spec
	return t, nil
}

// target is where a TPM spec points: a device node, or a socket to dial.
type target struct {
	network string // "device", "tcp" or "unix"
	addr    string // the device path, or the address to dial
}

// String is the spec that names t.
func (t target) String() string {
	if t.network == "device" {
		return t.addr
	}
	return t.network + ":" + t.addr
}

// parseSpec reads the TPM string Open takes, without touching the system. A
// malformed one is a configuration mistake, so it must not reach the dialer,
// whose errors ("missing port in address") come with advice for a TPM that
// is down. Every error wraps ErrBadSpec and quotes the spec.
func parseSpec(spec string) (target, error) {
	if spec == "" {
		spec = DefaultDevice
	}
	if strings.ContainsFunc(spec, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return target{}, fmt.Errorf("%w: %q holds a control character: use a device path (%s), unix:PATH or tcp:HOST:PORT", ErrBadSpec, spec, DefaultDevice)
	}
	if strings.TrimSpace(spec) != spec {
		return target{}, fmt.Errorf("%w: %q has white space around it: remove it", ErrBadSpec, spec)
	}
	switch {
	case strings.HasPrefix(spec, "tcp:"):
		addr := strings.TrimPrefix(spec, "tcp:")
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return target{}, fmt.Errorf("%w: %q: use tcp:HOST:PORT, such as tcp:127.0.0.1:2321 (an IPv6 address in brackets)", ErrBadSpec, spec)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return target{}, fmt.Errorf("%w: %q: the port is not a number from 1 to 65535: use tcp:HOST:PORT, such as tcp:127.0.0.1:2321", ErrBadSpec, spec)
		}
		return target{network: "tcp", addr: addr}, nil
	case strings.HasPrefix(spec, "unix:"):
		path := strings.TrimPrefix(spec, "unix:")
		if path == "" {
			return target{}, fmt.Errorf("%w: %q names no socket: use unix:PATH, such as unix:/run/swtpm/sock", ErrBadSpec, spec)
		}
		return target{network: "unix", addr: path}, nil
	case strings.HasPrefix(spec, "/"):
		return target{network: "device", addr: spec}, nil
	}
	return target{}, fmt.Errorf("%w: %q: use a device path (%s), unix:PATH or tcp:HOST:PORT", ErrBadSpec, spec, DefaultDevice)
}

func dialStream(network, addr, spec string) (transport.TPMCloser, error) {
	conn, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		hint := "start swtpm (swtpm socket --tpm2 --server type=tcp,port=2321 --flags not-need-init --tpmstate dir=DIR) or `iotemu tpm --listen 127.0.0.1:2321`"
		if network == "unix" {
			hint = "start swtpm with --server type=unixio,path=PATH, and check the path and its permissions"
		}
		return nil, fmt.Errorf("connect to the TPM at %s: %w: %s", spec, err, hint)
	}
	return &socketPolicy{next: &streamTransport{conn: conn}}, nil
}

func openDevice(path string) (transport.TPMCloser, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open TPM %s: no such device: check that the TPM is enabled in the firmware and its driver is loaded (ls /dev/tpm*), or use tcp:HOST:PORT for a TPM emulator", path)
	}
	tr, err := linuxtpm.Open(path)
	switch {
	case err == nil:
		return tr, nil
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("open TPM %s: permission denied: add the service user to the tss group (usermod -aG tss dpsagent) and restart the service: %w", path, err)
	case errors.Is(err, syscall.EBUSY):
		return nil, fmt.Errorf("open TPM %s: the device is busy (another program, such as tpm2-abrmd, holds it): use %s instead: %w", path, DefaultDevice, err)
	}
	return nil, fmt.Errorf("open TPM %s: %w", path, err)
}
