package mqttsrv

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"

	"go.uber.org/zap"
)

// benchSession accepts everything and keeps nothing, so the benchmark measures the server, not a session.
type benchSession struct{}

func (benchSession) Subscribe(f []Subscription) []byte       { return make([]byte, len(f)) }
func (benchSession) Publish(context.Context, *Message) error { return nil }
func (benchSession) Closed(error)                            {}
func (benchSession) Connect(context.Context, *ConnectRequest) (Session, ConnackCode) {
	return benchSession{}, Accepted
}

// BenchmarkSessionCycle runs what a DPS registration does on the wire: connect, subscribe, publish at QoS 1,
// disconnect, each step waiting for its acknowledgement, then waiting for the server to close. Over TLS a full
// handshake each time (ECDSA P-256, TLS 1.3); resumption saves little, as TLS 1.3 resumption keeps the ECDHE.
func BenchmarkSessionCycle(b *testing.B) {
	pki := newTestPKI(b)
	steps := []struct{ send, reply []byte }{
		{connectPkt(0x02, 240, "bench-device"), connackAccepted},
		{pkt(0x82, u16(1), str("$dps/registrations/res/#"), raw(1)), raw(0x90, 3, 0, 1, 0)},
		{pkt(0x32, str("$dps/registrations/PUT/iotdps-register/?$rid=1"), u16(2), []byte(`{"registrationId":"bench-device"}`)), raw(0x40, 2, 0, 2)},
		{pkt(0xe0), nil},
	}
	for _, tt := range []struct {
		name string
		tls  *testPKI
		dial func(addr string, cfg *tls.Config) (net.Conn, error)
	}{
		{name: "tcp", dial: func(addr string, _ *tls.Config) (net.Conn, error) { return net.Dial("tcp", addr) }},
		{name: "tls", tls: pki, dial: func(addr string, cfg *tls.Config) (net.Conn, error) { return tls.Dial("tcp", addr, cfg) }},
	} {
		b.Run(tt.name, func(b *testing.B) {
			env := startServer(b, tt.tls, Options{Handler: benchSession{}, Logger: zap.NewNop()})
			var cfg *tls.Config
			if tt.tls != nil {
				cfg = tt.tls.clientConfig(false)
			}
			buf := make([]byte, 16)
			for b.Loop() {
				c, err := tt.dial(env.addr, cfg)
				if err != nil {
					b.Fatal(err)
				}
				for _, s := range steps {
					if _, err := c.Write(s.send); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(c, buf[:len(s.reply)]); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := c.Read(buf); err != io.EOF {
					b.Fatalf("after DISCONNECT: %v, want EOF", err)
				}
				c.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
		})
	}
}
