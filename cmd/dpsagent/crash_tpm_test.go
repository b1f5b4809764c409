package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// crashFlushTransients flushes every transient object loaded in the swtpm at
// spec (tcp:HOST:PORT), over a connection of its own: the tpm package keeps
// its flushing to itself, and the crash tests need a clean TPM to try the
// keys a kill left, whatever the killed agent had loaded.
func crashFlushTransients(spec string) error {
	addr, ok := strings.CutPrefix(spec, "tcp:")
	if !ok {
		return fmt.Errorf("flush the TPM's transient objects: %q is not a tcp: TPM", spec)
	}
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return fmt.Errorf("flush the TPM's transient objects: %w", err)
	}
	defer conn.Close()
	tr := crashStreamTPM{conn}
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapHandles,
		Property:      uint32(tpm2.TPMHTTransient) << 24,
		PropertyCount: 64,
	}.Execute(tr)
	if errors.Is(err, tpm2.TPMRCInitialize) {
		return nil // never started since it was switched on: nothing is loaded
	}
	if err != nil {
		return fmt.Errorf("list the TPM's transient objects: %w", err)
	}
	handles, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		return err
	}
	for _, h := range handles.Handle {
		if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(tr); err != nil {
			return fmt.Errorf("flush transient object 0x%08x: %w", uint32(h), err)
		}
	}
	return nil
}

// crashStreamTPM sends TPM commands over swtpm's plain command stream: the
// command as is, the response read by the size in its header.
type crashStreamTPM struct{ conn net.Conn }

func (s crashStreamTPM) Send(cmd []byte) ([]byte, error) {
	if err := s.conn.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		return nil, err
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(s.conn, hdr); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > 64<<10 {
		return nil, fmt.Errorf("TPM response of %d bytes", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	_, err := io.ReadFull(s.conn, rsp[10:])
	return rsp, err
}
