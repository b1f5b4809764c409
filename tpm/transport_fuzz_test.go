package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"
)

// FuzzStreamResponse feeds streamTransport, which reads TPM responses from
// swtpm's or iotemu's socket by the size in their header, whatever a peer
// could send: another protocol, a simulator's platform port, a truncated or
// lying header. It must never panic or read past the announced size; it
// returns either exactly the announced response or an error, never both, and
// it succeeds whenever the bytes hold a complete response of a plausible
// size.
//
//	go test -run '^$' -fuzz FuzzStreamResponse -fuzztime 60s ./tpm/
func FuzzStreamResponse(f *testing.F) {
	for _, seed := range [][]byte{
		// TPM_RC_SUCCESS, no parameters: the smallest response.
		{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0},
		// TPM_RC_INITIALIZE, as an unstarted swtpm answers.
		{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x00},
		// A response with a body, and bytes after it that belong to nobody.
		append([]byte{0x80, 0x02, 0, 0, 0, 14, 0, 0, 0, 0, 1, 2, 3, 4}, "after"...),
		// Announces more than it sends.
		{0x80, 0x01, 0, 0, 0, 64, 0, 0, 0, 0},
		// Announces less than a header, and more than the limit.
		{0x80, 0x01, 0, 0, 0, 9, 0, 0, 0, 0},
		{0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0},
		// An HTTP server, and the simulator's platform port (4-byte answers).
		[]byte("HTTP/1.1 400 Bad Request\r\n\r\n"),
		{0, 0, 0, 0},
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		conn := &scriptedConn{in: bytes.NewReader(in)}
		rsp, err := (&streamTransport{conn: conn}).Send([]byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7a, 0, 0})
		if (rsp == nil) == (err == nil) {
			t.Fatalf("Send = %x, %v: want exactly one", rsp, err)
		}
		if !bytes.Equal(conn.out.Bytes(), []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7a, 0, 0}) {
			t.Fatalf("the command was not sent as is: %x", conn.out.Bytes())
		}
		complete := false
		if len(in) >= tpmHeaderSize {
			size := binary.BigEndian.Uint32(in[2:6])
			complete = size >= tpmHeaderSize && size <= maxResponseSize && uint32(len(in)) >= size
		}
		if err != nil {
			if complete {
				t.Fatalf("refused a complete response of %d bytes: %v", binary.BigEndian.Uint32(in[2:6]), err)
			}
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		if !complete {
			t.Fatalf("accepted %x from an incomplete or implausible response %x", rsp, in)
		}
		if size := binary.BigEndian.Uint32(in[2:6]); uint32(len(rsp)) != size || !bytes.Equal(rsp, in[:size]) {
			t.Fatalf("returned %d bytes %x, the header announced %d of %x", len(rsp), rsp, size, in)
		}
		if read := int64(len(in)) - int64(conn.in.Len()); read != int64(len(rsp)) {
			t.Fatalf("read %d bytes for a response of %d: the next response would start mid-stream", read, len(rsp))
		}
	})
}

// scriptedConn is a peer that answers with fixed bytes and keeps what it was sent.
type scriptedConn struct {
	net.Conn // the methods Send must not use panic
	in       *bytes.Reader
	out      bytes.Buffer
}

func (c *scriptedConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *scriptedConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *scriptedConn) SetDeadline(time.Time) error { return nil }

// Open refuses a malformed socket spec as a configuration mistake
// (ErrBadSpec) before dialing, rather than as a TPM that does not answer.
func TestOpenRefusesMalformedSocketSpecs(t *testing.T) {
	for _, spec := range []string{"tcp:", "tcp:127.0.0.1", "tcp:localhost:swtpm", "tcp:127.0.0.1:0", "unix:", "/dev/tpmrm0 "} {
		if _, err := Open(spec, Options{}); !errors.Is(err, ErrBadSpec) {
			t.Errorf("Open(%q) = %v, want ErrBadSpec", spec, err)
		}
	}
}
