package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

const (
	tpmHeaderSize = 10
	// maxResponseSize bounds what a misbehaving peer can make us allocate; real
	// TPM responses are at most a few kilobytes.
	maxResponseSize = 64 << 10
	// commandTimeout covers the slowest legitimate command: RSA key generation
	// on a discrete chip can take tens of seconds.
	commandTimeout = 2 * time.Minute
)

// streamTransport speaks the plain TPM command stream used by swtpm's server
// socket and by iotemu's simulated TPM: a command is written as is, and the
// response is read by its header's size field. No simulator platform framing.
type streamTransport struct {
	conn net.Conn
}

func (s *streamTransport) Send(cmd []byte) ([]byte, error) {
	if err := s.conn.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return nil, fmt.Errorf("set deadline: %w", err)
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("send command: %w", err)
	}
	var hdr [tpmHeaderSize]byte
	if _, err := io.ReadFull(s.conn, hdr[:]); err != nil {
		return nil, fmt.Errorf("read response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < tpmHeaderSize || size > maxResponseSize {
		return nil, fmt.Errorf("TPM response announces %d bytes, outside %d..%d: the peer does not speak the TPM command stream (is it a simulator platform port?)", size, tpmHeaderSize, maxResponseSize)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(s.conn, rsp[tpmHeaderSize:]); err != nil {
		return nil, fmt.Errorf("read response body: %w", err)
	}
	return rsp, nil
}

func (s *streamTransport) Close() error { return s.conn.Close() }

// socketPolicy adds what the kernel driver would otherwise do for a TPM behind
// a raw socket (swtpm, a simulator): it answers TPM_RC_INITIALIZE with
// TPM2_Startup(CLEAR), because firmware never started this TPM, and it resends
// commands the TPM asks to retry (TPM_RC_RETRY, _YIELDED, _TESTING) with a
// short growing pause.
type socketPolicy struct {
	next transport.TPMCloser
}

const maxRetries = 12 // 1 ms doubling: about 4 s in all

func (s *socketPolicy) Send(cmd []byte) ([]byte, error) {
	started := false
	for attempt := 0; ; attempt++ {
		rsp, err := s.next.Send(cmd)
		if err != nil {
			return nil, err
		}
		switch rc := responseCode(rsp); {
		case rc == tpm2.TPMRCInitialize && !started:
			started = true
			if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(s.next); err != nil {
				return nil, fmt.Errorf("the TPM was not started and TPM2_Startup(CLEAR) failed: %w", err)
			}
		case (rc == tpm2.TPMRCRetry || rc == tpm2.TPMRCYielded || rc == tpm2.TPMRCTesting) && attempt < maxRetries:
			time.Sleep(time.Millisecond << attempt)
		default:
			return rsp, nil
		}
	}
}

func (s *socketPolicy) Close() error { return s.next.Close() }

func responseCode(rsp []byte) tpm2.TPMRC {
	if len(rsp) < tpmHeaderSize {
		return 0
	}
	return tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10]))
}

// Counter counts the commands sent to a TPM, in total and per command code. The
// number of TPM round trips per provisioning and renewal is a tracked figure.
// On a raw socket, the TPM2_Startup sent to an unstarted TPM and the resends a
// busy TPM asks for are not counted: they are the transport's, not the
// operation's, and a kernel device does both below us anyway.
type Counter struct {
	total atomic.Uint64
	mu    sync.Mutex
	byCC  map[tpm2.TPMCC]uint64
}

// Total is the number of commands sent so far.
func (c *Counter) Total() uint64 { return c.total.Load() }

// ByCommand returns a copy of the per-command counts, keyed by command name.
func (c *Counter) ByCommand() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.byCC))
	for cc, n := range c.byCC {
		out[commandName(cc)] = n
	}
	return out
}

func (c *Counter) add(cc tpm2.TPMCC) {
	c.total.Add(1)
	c.mu.Lock()
	if c.byCC == nil {
		c.byCC = make(map[tpm2.TPMCC]uint64)
	}
	c.byCC[cc]++
	c.mu.Unlock()
}

type countingTransport struct {
	next    transport.TPM
	counter *Counter
	before  func(name string)
}

func (c *countingTransport) Send(cmd []byte) ([]byte, error) {
	if len(cmd) >= tpmHeaderSize {
		cc := tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10]))
		c.counter.add(cc)
		if c.before != nil {
			c.before(commandName(cc))
		}
	}
	return c.next.Send(cmd)
}

func commandName(cc tpm2.TPMCC) string {
	switch cc {
	case tpm2.TPMCCCreatePrimary:
		return "CreatePrimary"
	case tpm2.TPMCCCreate:
		return "Create"
	case tpm2.TPMCCLoad:
		return "Load"
	case tpm2.TPMCCSign:
		return "Sign"
	case tpm2.TPMCCFlushContext:
		return "FlushContext"
	case tpm2.TPMCCReadPublic:
		return "ReadPublic"
	case tpm2.TPMCCGetCapability:
		return "GetCapability"
	case tpm2.TPMCCStartup:
		return "Startup"
	}
	return fmt.Sprintf("0x%08x", uint32(cc))
}

// errClosed is returned by every operation on a closed TPM.
var errClosed = errors.New("the TPM connection is closed")
