// Package tpmserver serves a TPM over TCP as the plain command stream that
// swtpm's server port speaks: each command is written as is and answered with
// its response, no platform framing. iotemu uses it to offer the reference TPM
// simulator to dpsagent, whose shipped binary has no cgo and so cannot embed
// the simulator, making the demo need nothing installed.
package tpmserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"go.uber.org/zap"
)

const (
	headerSize = 10
	// maxCommandSize is far above any real command (TPM2 buffers are 4 KiB) and
	// stops a stray client from making the server allocate at will.
	maxCommandSize = 64 << 10
	idleTimeout    = 10 * time.Minute
)

// Server relays commands from any number of connections to one TPM, one
// command at a time. Like a TPM without a resource manager, every connection
// sees the same loaded objects.
type Server struct {
	tpm transport.TPM
	log *zap.Logger

	mu    sync.Mutex // serialises commands to the TPM
	wg    sync.WaitGroup
	conns sync.Map // net.Conn -> struct{}, to close them on shutdown
}

// New serves tpm; log may be nil.
func New(tpm transport.TPM, log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	return &Server{tpm: tpm, log: log}
}

// Serve accepts connections until ctx ends or the listener fails, then closes
// every connection and waits for their goroutines.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	defer func() {
		s.conns.Range(func(c, _ any) bool { _ = c.(net.Conn).Close(); return true })
		s.wg.Wait()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept TPM connection: %w", err)
		}
		s.conns.Store(c, struct{}{})
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.conns.Delete(c)
			defer c.Close()
			if err := s.serveConn(c); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Info("TPM client connection ended", zap.Stringer("remote", c.RemoteAddr()), zap.Error(err))
			}
		}()
	}
}

// serveConn answers commands until the connection ends; it always returns why.
func (s *Server) serveConn(c net.Conn) error {
	for {
		if err := c.SetReadDeadline(time.Now().Add(idleTimeout)); err != nil {
			return err
		}
		cmd, err := readCommand(c)
		if err != nil {
			return err
		}
		s.mu.Lock()
		rsp, err := s.tpm.Send(cmd)
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("run TPM command: %w", err)
		}
		if _, err := c.Write(rsp); err != nil {
			return err
		}
	}
}

// readCommand reads one command by the size in its header, refusing sizes no
// TPM command has.
func readCommand(r io.Reader) ([]byte, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < headerSize || size > maxCommandSize {
		return nil, fmt.Errorf("command announces %d bytes, outside %d..%d: not a TPM command stream", size, headerSize, maxCommandSize)
	}
	cmd := make([]byte, size)
	copy(cmd, hdr[:])
	if _, err := io.ReadFull(r, cmd[headerSize:]); err != nil {
		return nil, fmt.Errorf("read command body: %w", err)
	}
	return cmd, nil
}
