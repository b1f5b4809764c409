package tpm

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
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
	if spec == "" {
		spec = DefaultDevice
	}
	var (
		tr  transport.TPMCloser
		err error
	)
	switch {
	case strings.HasPrefix(spec, "tcp:"):
		tr, err = dialStream("tcp", strings.TrimPrefix(spec, "tcp:"), spec)
	case strings.HasPrefix(spec, "unix:"):
		tr, err = dialStream("unix", strings.TrimPrefix(spec, "unix:"), spec)
	case strings.HasPrefix(spec, "/"):
		if spec != DefaultDevice {
			log.Warn("using a TPM device without the kernel resource manager; objects left by other programs can fill its few slots",
				zap.String("device", spec), zap.String("recommended", DefaultDevice))
		}
		tr, err = openDevice(spec)
	default:
		return nil, fmt.Errorf("%w: %q: use a device path (%s), unix:PATH or tcp:HOST:PORT", ErrBadSpec, spec, DefaultDevice)
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
