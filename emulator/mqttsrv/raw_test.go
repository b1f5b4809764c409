package mqttsrv

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// Hand-built packets: the server must be right about bytes no well-behaved client would send.

func pkt(header byte, parts ...[]byte) []byte {
	var body []byte
	for _, p := range parts {
		body = append(body, p...)
	}
	return append(append([]byte{header}, remainingLength(len(body))...), body...)
}

func remainingLength(n int) []byte {
	var b []byte
	for {
		digit := byte(n % 128)
		n /= 128
		if n > 0 {
			digit |= 0x80
		}
		b = append(b, digit)
		if n == 0 {
			return b
		}
	}
}

func str(s string) []byte  { return append(u16(uint16(len(s))), s...) }
func u16(v uint16) []byte  { return []byte{byte(v >> 8), byte(v)} }
func raw(b ...byte) []byte { return b }

// connectPkt is a CONNECT for MQTT 3.1.1 with the given flags, keep-alive (seconds), client ID and fields.
func connectPkt(flags byte, keepAlive uint16, clientID string, rest ...[]byte) []byte {
	parts := append([][]byte{str("MQTT"), raw(4, flags), u16(keepAlive), str(clientID)}, rest...)
	return pkt(0x10, parts...)
}

var connackAccepted = raw(0x20, 0x02, 0x00, 0x00)

type rawClient struct {
	t testing.TB
	c net.Conn
}

func dialRaw(t testing.TB, env *testEnv) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", env.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c}
}

func (r *rawClient) send(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("send %x: %v", b, err)
	}
}

// expect reads exactly len(want) bytes and compares them.
func (r *rawClient) expect(want []byte) {
	r.t.Helper()
	got := make([]byte, len(want))
	r.c.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := io.ReadFull(r.c, got); err != nil {
		r.t.Fatalf("want % x from the server, got % x and %v", want, got, err)
	}
	if !bytes.Equal(got, want) {
		r.t.Fatalf("server sent % x, want % x", got, want)
	}
}

// expectClosed reads until the server closes the connection and checks what it sent first.
func (r *rawClient) expectClosed(want []byte) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(waitFor))
	var got []byte
	buf := make([]byte, 512)
	for {
		n, err := r.c.Read(buf)
		got = append(got, buf[:n]...)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			r.t.Fatalf("connection still open after %s (received % x)", waitFor, got)
		}
		// A reset is a close too: the server may leave unread bytes of a rejected packet behind.
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			break
		}
		if err != nil {
			r.t.Fatalf("read: %v", err)
		}
	}
	if !bytes.Equal(got, want) {
		r.t.Fatalf("before closing, the server sent % x, want % x", got, want)
	}
}

// connect completes a CONNECT and returns the server-side session.
func (r *rawClient) connect(env *testEnv, keepAlive uint16, clientID string) *testSession {
	r.t.Helper()
	r.send(connectPkt(0x02, keepAlive, clientID))
	r.expect(connackAccepted)
	return recv(r.t, env.handler.sessions, "session")
}

func TestMalformedInputClosesConnection(t *testing.T) {
	env := startServer(t, nil, Options{MaxPacketSize: 96 << 10})
	tests := []struct {
		name         string
		afterConnect bool   // sent on an established connection (else as the first packet)
		send         []byte // the offending bytes
		reply        []byte // what the server must send before closing
	}{
		// First packet.
		{name: "PINGREQ before CONNECT", send: pkt(0xc0)},
		{name: "PUBLISH before CONNECT", send: pkt(0x30, str("a/b"), []byte("x"))},
		{name: "SUBSCRIBE before CONNECT", send: pkt(0x82, u16(1), str("a"), raw(0))},
		{name: "CONNECT with fixed-header flags", send: pkt(0x12, str("MQTT"), raw(4, 2), u16(0), str("id"))},
		{name: "CONNECT for an unknown protocol", send: pkt(0x10, str("MQTX"), raw(4, 2), u16(0), str("id"))},
		{name: "CONNECT for MQTT level 3", send: pkt(0x10, str("MQTT"), raw(3, 2), u16(0), str("id")), reply: raw(0x20, 2, 0, 1)},
		{name: "CONNECT for MQTT 3.1 (MQIsdp)", send: pkt(0x10, str("MQIsdp"), raw(3, 2), u16(0), str("id")), reply: raw(0x20, 2, 0, 1)},
		{name: "CONNECT for MQTT 5", send: pkt(0x10, str("MQTT"), raw(5, 2), u16(0), raw(0), str("id")), reply: raw(0x20, 2, 0, 1)},
		{name: "CONNECT protocol name truncated", send: pkt(0x10, raw(0, 4, 'M', 'Q'))},
		{name: "CONNECT keep-alive truncated", send: pkt(0x10, str("MQTT"), raw(4, 2, 0))},
		{name: "CONNECT reserved flag", send: connectPkt(0x03, 0, "id")},
		{name: "CONNECT password without username", send: connectPkt(0x42, 0, "id", str("pw"))},
		{name: "CONNECT will QoS without will flag", send: connectPkt(0x0a, 0, "id")},
		{name: "CONNECT will retain without will flag", send: connectPkt(0x22, 0, "id")},
		{name: "CONNECT will QoS 3", send: connectPkt(0x1e, 0, "id", str("w"), str("bye"))},
		{name: "CONNECT will topic with a wildcard", send: connectPkt(0x06, 0, "id", str("w/#"), str("bye"))},
		{name: "CONNECT will message truncated", send: connectPkt(0x06, 0, "id", str("w"), raw(0, 9, 'b'))},
		{name: "CONNECT client ID not UTF-8", send: connectPkt(0x02, 0, "\xc3\x28")},
		{name: "CONNECT client ID with U+0000", send: connectPkt(0x02, 0, "a\x00b")},
		{name: "CONNECT username with a UTF-16 surrogate", send: connectPkt(0x82, 0, "id", str("\xed\xa0\x80"))},
		{name: "CONNECT client ID truncated", send: pkt(0x10, str("MQTT"), raw(4, 2), u16(0), raw(0, 10, 'a', 'b', 'c'))},
		{name: "CONNECT password truncated", send: connectPkt(0xc2, 0, "id", str("user"), raw(0, 5))},
		{name: "CONNECT with trailing bytes", send: connectPkt(0x02, 0, "id", raw(0))},
		{name: "CONNECT empty client ID without clean session", send: connectPkt(0x00, 0, ""), reply: raw(0x20, 2, 0, 2)},
		{name: "CONNECT remaining length of 5 bytes", send: raw(0x10, 0xff, 0xff, 0xff, 0xff, 0x7f)},
		{name: "CONNECT above the size limit", send: append(raw(0x10), remainingLength(96<<10)...)},

		// On an established connection.
		{afterConnect: true, name: "second CONNECT", send: connectPkt(0x02, 0, "raw")},
		{afterConnect: true, name: "PUBLISH QoS 3", send: pkt(0x36, str("a"), u16(1))},
		{afterConnect: true, name: "QoS 0 PUBLISH with DUP", send: pkt(0x38, str("a"))},
		{afterConnect: true, name: "PUBLISH to a + wildcard", send: pkt(0x30, str("a/+/b"), []byte("x"))},
		{afterConnect: true, name: "PUBLISH to a # wildcard", send: pkt(0x30, str("a/#"), []byte("x"))},
		{afterConnect: true, name: "PUBLISH to an empty topic", send: pkt(0x30, str(""), []byte("x"))},
		{afterConnect: true, name: "PUBLISH topic not UTF-8", send: pkt(0x30, str("a\xff"))},
		{afterConnect: true, name: "PUBLISH topic with U+0000", send: pkt(0x30, str("a\x00"))},
		{afterConnect: true, name: "PUBLISH topic with an overlong encoding", send: pkt(0x30, str("a\xc0\xaf"))},
		{afterConnect: true, name: "QoS 1 PUBLISH with packet identifier 0", send: pkt(0x32, str("a"), u16(0))},
		{afterConnect: true, name: "QoS 1 PUBLISH without packet identifier", send: pkt(0x32, str("a"), raw(1))},
		{afterConnect: true, name: "PUBLISH topic longer than the packet", send: pkt(0x30, raw(0, 20, 'a'))},
		{afterConnect: true, name: "PUBLISH remaining length of 5 bytes", send: raw(0x30, 0x80, 0x80, 0x80, 0x80, 0x01)},
		{afterConnect: true, name: "PUBLISH above the size limit", send: append(raw(0x30), remainingLength(96<<10)...)},
		{afterConnect: true, name: "PUBACK with flags", send: pkt(0x42, u16(1))},
		{afterConnect: true, name: "PUBACK with a 3-byte body", send: pkt(0x40, u16(1), raw(0))},
		{afterConnect: true, name: "PUBACK with packet identifier 0", send: pkt(0x40, u16(0))},
		{afterConnect: true, name: "PUBREL without its flags", send: pkt(0x60, u16(1))},
		{afterConnect: true, name: "PUBCOMP truncated", send: pkt(0x70, raw(1))},
		{afterConnect: true, name: "SUBSCRIBE without its flags", send: pkt(0x80, u16(1), str("a"), raw(0))},
		{afterConnect: true, name: "SUBSCRIBE without topic filters", send: pkt(0x82, u16(1))},
		{afterConnect: true, name: "SUBSCRIBE with packet identifier 0", send: pkt(0x82, u16(0), str("a"), raw(0))},
		{afterConnect: true, name: "SUBSCRIBE requesting QoS 3", send: pkt(0x82, u16(1), str("a"), raw(3))},
		{afterConnect: true, name: "SUBSCRIBE with reserved bits in the QoS byte", send: pkt(0x82, u16(1), str("a"), raw(0x41))},
		{afterConnect: true, name: "SUBSCRIBE without requested QoS", send: pkt(0x82, u16(1), str("a"))},
		{afterConnect: true, name: "SUBSCRIBE filter truncated", send: pkt(0x82, u16(1), raw(0, 5, 'a'))},
		{afterConnect: true, name: "SUBSCRIBE filter with # before the end", send: pkt(0x82, u16(1), str("a/#/b"), raw(0))},
		{afterConnect: true, name: "SUBSCRIBE filter with # inside a level", send: pkt(0x82, u16(1), str("a#"), raw(0))},
		{afterConnect: true, name: "SUBSCRIBE filter with + inside a level", send: pkt(0x82, u16(1), str("a+/b"), raw(0))},
		{afterConnect: true, name: "SUBSCRIBE empty filter", send: pkt(0x82, u16(1), str(""), raw(0))},
		{afterConnect: true, name: "SUBSCRIBE filter not UTF-8", send: pkt(0x82, u16(1), str("\xfe"), raw(0))},
		{afterConnect: true, name: "SUBSCRIBE second filter bad", send: pkt(0x82, u16(1), str("ok"), raw(1), str("#/x"), raw(0))},
		{afterConnect: true, name: "UNSUBSCRIBE without its flags", send: pkt(0xa0, u16(1), str("a"))},
		{afterConnect: true, name: "UNSUBSCRIBE without topic filters", send: pkt(0xa2, u16(1))},
		{afterConnect: true, name: "UNSUBSCRIBE with packet identifier 0", send: pkt(0xa2, u16(0), str("a"))},
		{afterConnect: true, name: "UNSUBSCRIBE with a bad filter", send: pkt(0xa2, u16(1), str("a/#/b"))},
		{afterConnect: true, name: "UNSUBSCRIBE with an empty filter", send: pkt(0xa2, u16(1), str(""))},
		{afterConnect: true, name: "PINGREQ with flags", send: raw(0xc1, 0)},
		{afterConnect: true, name: "PINGREQ with a body", send: pkt(0xc0, raw(0))},
		{afterConnect: true, name: "DISCONNECT with flags", send: raw(0xe2, 0)},
		{afterConnect: true, name: "CONNACK from a client", send: pkt(0x20, raw(0, 0))},
		{afterConnect: true, name: "SUBACK from a client", send: pkt(0x90, u16(1), raw(0))},
		{afterConnect: true, name: "UNSUBACK from a client", send: pkt(0xb0, u16(1))},
		{afterConnect: true, name: "PINGRESP from a client", send: pkt(0xd0)},
		{afterConnect: true, name: "reserved packet type 0", send: pkt(0x00)},
		{afterConnect: true, name: "reserved packet type 15", send: pkt(0xf0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, env)
			var s *testSession
			if tt.afterConnect {
				s = c.connect(env, 0, "raw")
			}
			c.send(tt.send)
			c.expectClosed(tt.reply)
			if s == nil {
				if len(env.handler.sessions) != 0 {
					t.Fatal("the handler was asked to accept a malformed CONNECT")
				}
				return
			}
			reason := recv(t, s.closed, "Session.Closed")
			if !errors.Is(reason, ErrProtocolViolation) {
				t.Fatalf("Session.Closed(%v), want an ErrProtocolViolation", reason)
			}
			if len(s.published) != 0 || len(s.subscribed) != 0 {
				t.Fatal("a malformed packet reached the session")
			}
		})
	}
}

// An announced length above the limit closes the connection at once, without allocating or waiting for
// that many bytes: the timeouts are a minute here, so a server waiting for the body would be seen.
func TestOversizedPacketIsRejectedBeforeAllocation(t *testing.T) {
	const announced = 200 << 20
	env := startServer(t, nil, Options{MaxPacketSize: 96 << 10, ConnectTimeout: time.Minute, PacketTimeout: time.Minute})
	for _, tt := range []struct {
		name         string
		afterConnect bool
		header       byte
	}{
		{name: "CONNECT", header: 0x10},
		{name: "PUBLISH", header: 0x30, afterConnect: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, env)
			var s *testSession
			if tt.afterConnect {
				s = c.connect(env, 0, "big")
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			c.send(append([]byte{tt.header}, remainingLength(announced)...))
			c.expectClosed(nil)
			if s != nil {
				if reason := recv(t, s.closed, "Session.Closed"); !errors.Is(reason, ErrPacketTooLarge) {
					t.Fatalf("Session.Closed(%v), want ErrPacketTooLarge", reason)
				}
			}
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > announced/4 {
				t.Fatalf("the server allocated %d bytes for a packet it should have refused", grew)
			}
		})
	}
}

// The limit counts the whole packet: exactly MaxPacketSize passes, one byte more does not.
func TestMaxPacketSizeBoundary(t *testing.T) {
	const limit = 4096
	env := startServer(t, nil, Options{MaxPacketSize: limit})
	publish := func(total int) []byte {
		// header (1) + remaining length (2 bytes for these sizes) + topic (2+1) + payload
		return pkt(0x30, str("t"), make([]byte, total-1-2-3))
	}
	c := dialRaw(t, env)
	s := c.connect(env, 0, "edge")
	c.send(publish(limit))
	if m := recv(t, s.published, "message of exactly the limit"); len(m.Payload) != limit-6 {
		t.Fatalf("payload of %d bytes, want %d", len(m.Payload), limit-6)
	}
	c.send(publish(limit + 1))
	c.expectClosed(nil)
	if reason := recv(t, s.closed, "Session.Closed"); !errors.Is(reason, ErrPacketTooLarge) {
		t.Fatalf("Session.Closed(%v), want ErrPacketTooLarge", reason)
	}
}

// A client that starts a packet and stops sending is cut off after PacketTimeout; one that never sends
// CONNECT (or never finishes the TLS handshake) after ConnectTimeout.
func TestStalledClientsAreDisconnected(t *testing.T) {
	pki := newTestPKI(t)
	short := Options{ConnectTimeout: 300 * time.Millisecond, PacketTimeout: 300 * time.Millisecond}

	t.Run("packet body never completes", func(t *testing.T) {
		env := startServer(t, nil, short)
		c := dialRaw(t, env)
		s := c.connect(env, 0, "slow")
		c.send(raw(0x30, 10, 0, 1, 'a'))
		c.expectClosed(nil)
		if reason := recv(t, s.closed, "Session.Closed"); !errors.Is(reason, os.ErrDeadlineExceeded) {
			t.Fatalf("Session.Closed(%v), want a read deadline error", reason)
		}
	})
	t.Run("no CONNECT", func(t *testing.T) {
		env := startServer(t, nil, short)
		dialRaw(t, env).expectClosed(nil)
	})
	t.Run("CONNECT never completes", func(t *testing.T) {
		env := startServer(t, nil, short)
		c := dialRaw(t, env)
		c.send(raw(0x10, 20, 0, 4, 'M'))
		c.expectClosed(nil)
	})
	t.Run("no TLS handshake", func(t *testing.T) {
		env := startServer(t, pki, short)
		dialRaw(t, env).expectClosed(nil)
	})
}

func TestKeepAliveExpiry(t *testing.T) {
	env := startServer(t, nil, Options{})
	c := dialRaw(t, env)
	s := c.connect(env, 1, "sleepy")
	c.expectClosed(nil) // 1.5 s after the CONNACK
	if reason := recv(t, s.closed, "Session.Closed"); !errors.Is(reason, ErrKeepAliveTimeout) {
		t.Fatalf("Session.Closed(%v), want ErrKeepAliveTimeout", reason)
	}
}

// The exact bytes of every acknowledgement, and what reaches the session.
func TestRawSessionFlow(t *testing.T) {
	env := startServer(t, nil, Options{})
	env.handler.grant = func(s Subscription) byte {
		if s.Filter == "denied" {
			return 0x80
		}
		return min(s.QoS, 1)
	}
	c := dialRaw(t, env)
	c.send(connectPkt(0x2e, 30, "flow", str("will/topic"), str("gone"))) // clean, will QoS 1, retained
	c.expect(connackAccepted)
	s := recv(t, env.handler.sessions, "session")
	if w := s.req.Will; w == nil || w.Topic != "will/topic" || string(w.Payload) != "gone" || w.QoS != 1 || !w.Retain {
		t.Fatalf("will %+v, want will/topic, gone, QoS 1, retained", w)
	}
	if s.req.KeepAlive != 30*time.Second || !s.req.CleanSession || s.req.HasUsername || s.req.TLS != nil {
		t.Fatalf("connect request %+v", s.req)
	}

	c.send(pkt(0x82, u16(0x0102), str("a/+"), raw(0), str("b/#"), raw(2), str("denied"), raw(1)))
	c.expect(raw(0x90, 5, 0x01, 0x02, 0, 1, 0x80))
	if got := recv(t, s.subscribed, "subscribe"); len(got) != 3 || got[1] != (Subscription{Filter: "b/#", QoS: 2}) {
		t.Fatalf("session got subscriptions %+v", got)
	}

	c.send(pkt(0xa2, u16(0x0203), str("a/+")))
	c.expect(raw(0xb0, 2, 0x02, 0x03))
	if got := recv(t, s.unsubscribed, "unsubscribe"); len(got) != 1 || got[0] != "a/+" {
		t.Fatalf("session got unsubscribe %q", got)
	}

	c.send(pkt(0x30, str("q/0"), []byte("zero")))
	if m := recv(t, s.published, "QoS 0 message"); m.Topic != "q/0" || string(m.Payload) != "zero" || m.QoS != 0 {
		t.Fatalf("message %+v", m)
	}

	c.send(pkt(0x33, str("q/1"), u16(7), []byte("one"))) // retained
	c.expect(raw(0x40, 2, 0, 7))
	if m := recv(t, s.published, "QoS 1 message"); m.PacketID != 7 || !m.Retain || string(m.Payload) != "one" {
		t.Fatalf("message %+v", m)
	}

	c.send(pkt(0x34, str("q/2"), u16(8), []byte("two")))
	c.expect(raw(0x50, 2, 0, 8))
	c.send(pkt(0x3c, str("q/2"), u16(8), []byte("two"))) // the client resends before seeing PUBREC
	c.expect(raw(0x50, 2, 0, 8))
	c.send(pkt(0x62, u16(8)))
	c.expect(raw(0x70, 2, 0, 8))
	recv(t, s.published, "QoS 2 message")
	if len(s.published) != 0 {
		t.Fatal("a duplicate QoS 2 message was delivered twice")
	}

	c.send(pkt(0xc0))
	c.expect(raw(0xd0, 0))

	// Server to client: QoS 0, then QoS 1 settled by the client's PUBACK.
	d0, err := s.req.Conn.Publish("down/0", []byte("hi"), 0)
	if err != nil {
		t.Fatal(err)
	}
	c.expect(pkt(0x30, str("down/0"), []byte("hi")))
	<-d0.Done()
	d1, err := s.req.Conn.Publish("down/1", []byte("hey"), 1)
	if err != nil {
		t.Fatal(err)
	}
	c.expect(pkt(0x32, str("down/1"), u16(1), []byte("hey")))
	if d1.Err() != nil {
		t.Fatal("delivery settled before the PUBACK")
	}
	c.send(pkt(0x40, u16(1)))
	recv(t, d1.Done(), "delivery")
	if d1.Err() != nil {
		t.Fatalf("acknowledged delivery failed: %v", d1.Err())
	}

	c.send(pkt(0xe0))
	c.expectClosed(nil)
	if reason := recv(t, s.closed, "Session.Closed"); !errors.Is(reason, ErrClientDisconnected) {
		t.Fatalf("Session.Closed(%v), want ErrClientDisconnected", reason)
	}
}
