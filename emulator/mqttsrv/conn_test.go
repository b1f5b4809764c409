package mqttsrv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/zap"
)

// IoT Hub closes the connection on a QoS 2 PUBLISH; a session expresses that by refusing the message, and
// the client then gets no PUBREC.
func TestSessionCanRefuseQoS2(t *testing.T) {
	errQoS2 := errors.New("QoS 2 is not supported")
	env := startServer(t, nil, Options{})
	env.handler.publishErr = func(m *Message) error {
		if m.QoS == 2 {
			return errQoS2
		}
		return nil
	}
	c := dialRaw(t, env)
	s := c.connect(env, 0, "hub-device")
	c.send(pkt(0x34, str("devices/d/messages/events/"), u16(1), []byte("x")))
	c.expectClosed(nil)
	if reason := recv(t, s.closed, "Session.Closed"); !errors.Is(reason, errQoS2) {
		t.Fatalf("Session.Closed(%v), want the session's error", reason)
	}
}

func TestSessionPresentFlag(t *testing.T) {
	env := startServer(t, nil, Options{})
	env.handler.present = true
	for _, tt := range []struct {
		flags byte
		want  []byte
	}{
		{flags: 0x00, want: raw(0x20, 2, 1, 0)}, // persistent session: the session's answer
		{flags: 0x02, want: raw(0x20, 2, 0, 0)}, // clean session: always 0 (§3.2.2.2)
	} {
		c := dialRaw(t, env)
		c.send(connectPkt(tt.flags, 0, "persistent"))
		c.expect(tt.want)
		recv(t, env.handler.sessions, "session")
	}
}

func TestPublishBeforeConnackIsRefused(t *testing.T) {
	h := newTestHandler()
	var early error
	h.onConnect = func(req *ConnectRequest) { _, early = req.Conn.Publish("too/early", nil, 0) }
	env := startServer(t, nil, Options{Handler: h})
	dialRaw(t, env).connect(env, 0, "eager")
	if !errors.Is(early, ErrNotConnected) {
		t.Fatalf("Publish inside Connect returned %v, want ErrNotConnected", early)
	}
}

// Once a client has the CONNACK, a publish to it succeeds and arrives after the CONNACK: front-ends publish
// to devices as soon as they connect (an admin API, a pending cloud-to-device message).
func TestPublishRightAfterConnack(t *testing.T) {
	env := startServer(t, nil, Options{Logger: zap.NewNop()})
	for i := range 200 {
		c := dialRaw(t, env)
		s := c.connect(env, 0, fmt.Sprintf("quick-%d", i))
		if _, err := s.req.Conn.Publish("welcome", nil, 0); err != nil {
			t.Fatalf("connection %d: Publish right after CONNACK: %v", i, err)
		}
		c.expect(pkt(0x30, str("welcome")))
		c.c.Close()
		recv(t, s.closed, "Session.Closed")
	}
}

func TestPublishArgumentsAreChecked(t *testing.T) {
	env := startServer(t, nil, Options{})
	s := dialRaw(t, env).connect(env, 0, "args")
	for _, tt := range []struct {
		topic string
		qos   byte
	}{{"a/+", 0}, {"a/#", 1}, {"", 0}, {"a\x00", 0}, {"ok", 2}, {strings.Repeat("t", 65536), 0}} {
		if _, err := s.req.Conn.Publish(tt.topic, nil, tt.qos); err == nil {
			t.Errorf("Publish(%.20q, QoS %d) succeeded", tt.topic, tt.qos)
		}
	}
}

// A QoS 1 message the client has not acknowledged when the connection ends is reported lost, and the
// connection refuses further publishes.
func TestUnacknowledgedDeliveryFailsWhenConnectionEnds(t *testing.T) {
	env := startServer(t, nil, Options{})
	c := dialRaw(t, env)
	s := c.connect(env, 0, "forgetful")
	d, err := s.req.Conn.Publish("c2d", []byte("m"), 1)
	if err != nil {
		t.Fatal(err)
	}
	c.expect(pkt(0x32, str("c2d"), u16(1), []byte("m")))
	c.c.Close()
	recv(t, s.closed, "Session.Closed")
	recv(t, d.Done(), "settled delivery")
	if !errors.Is(d.Err(), ErrConnClosed) {
		t.Fatalf("delivery error %v, want ErrConnClosed", d.Err())
	}
	if _, err := s.req.Conn.Publish("c2d", nil, 0); !errors.Is(err, ErrConnClosed) {
		t.Fatalf("Publish after close returned %v, want ErrConnClosed", err)
	}
	recv(t, s.req.Conn.Done(), "Conn.Done")
}

// A client that stops reading cannot block publishers beyond WriteTimeout: the write fails and the
// connection closes.
func TestClientThatDoesNotReadIsDisconnected(t *testing.T) {
	env := startServer(t, nil, Options{WriteTimeout: 200 * time.Millisecond})
	c := dialRaw(t, env)
	s := c.connect(env, 0, "deaf")
	payload := make([]byte, 1<<20)
	var err error
	for i := 0; i < 256 && err == nil; i++ { // far more than loopback socket buffers hold
		_, err = s.req.Conn.Publish("flood", payload, 0)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Publish to a client that does not read returned %v, want a write deadline error", err)
	}
	if reason := recv(t, s.closed, "Session.Closed"); !errors.Is(reason, os.ErrDeadlineExceeded) {
		t.Fatalf("Session.Closed(%v), want the write deadline error", reason)
	}
}

// Publishes from many goroutines reach the client as whole packets, each acknowledged.
func TestConcurrentPublishes(t *testing.T) {
	const publishers, each = 8, 50
	env := startServer(t, newTestPKI(t), Options{})
	got := make(chan mqtt.Message, publishers*each)
	client, err := pahoClient(t, env, "busy", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(250)
	s := recv(t, env.handler.sessions, "session")
	wait(t, client.Subscribe("down/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m }), "subscribe")

	var wg sync.WaitGroup
	errs := make(chan error, publishers*each)
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				d, err := s.req.Conn.Publish(fmt.Sprintf("down/%d", p), fmt.Appendf(nil, "%d", i), byte(i%2))
				if err == nil {
					select {
					case <-d.Done():
						err = d.Err()
					case <-time.After(waitFor):
						err = errors.New("no PUBACK")
					}
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for range publishers * each {
		recv(t, got, "message")
	}
}

func TestRegistryReplacesOlderConnection(t *testing.T) {
	env := startServer(t, nil, Options{})
	first := dialRaw(t, env)
	s1 := first.connect(env, 0, "device-7")
	second := dialRaw(t, env)
	s2 := second.connect(env, 0, "device-7")

	first.expectClosed(nil)
	if reason := recv(t, s1.closed, "first Session.Closed"); !errors.Is(reason, ErrReplaced) {
		t.Fatalf("first connection closed with %v, want ErrReplaced", reason)
	}
	if _, err := s1.req.Conn.Publish("late", nil, 0); !errors.Is(err, ErrConnClosed) || !errors.Is(err, ErrReplaced) {
		t.Fatalf("Publish on the replaced connection returned %v, want ErrConnClosed and ErrReplaced", err)
	}
	// The replaced session unregistered itself in Closed; that must not remove its successor.
	if got := env.handler.registry.Lookup("device-7"); got != s2.req.Conn {
		t.Fatalf("Lookup returned %p, want the newer connection %p", got, s2.req.Conn)
	}
	second.send(pkt(0xc0))
	second.expect(raw(0xd0, 0))
}

// blockingHandler holds Connect until its context ends, as a handler waiting on a slow backend would.
type blockingHandler struct{ entered, cancelled chan struct{} }

func (h *blockingHandler) Connect(ctx context.Context, _ *ConnectRequest) (Session, ConnackCode) {
	close(h.entered)
	<-ctx.Done()
	close(h.cancelled)
	return nil, RefusedServerUnavailable
}

// Close ends everything: listeners, handshakes in progress, handlers, sessions. startServer's cleanup
// checks that Serve returned ErrServerClosed and no goroutine survived.
func TestCloseEndsEveryConnection(t *testing.T) {
	pki := newTestPKI(t)
	env := startServer(t, pki, Options{})
	blocked := &blockingHandler{entered: make(chan struct{}), cancelled: make(chan struct{})}
	envBlocked := startServer(t, nil, Options{Handler: blocked})

	client, err := pahoClient(t, env, "connected", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(0)
	s := recv(t, env.handler.sessions, "session")
	silent, err := net.Dial("tcp", env.addr) // TCP open, TLS handshake never started
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	dialRaw(t, envBlocked).send(connectPkt(0x02, 0, "waiting"))
	recv(t, blocked.entered, "Connect call")

	for _, e := range []*testEnv{env, envBlocked} {
		if err := e.srv.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if reason := recv(t, s.closed, "Session.Closed"); !errors.Is(reason, ErrServerClosed) {
		t.Fatalf("Session.Closed(%v), want ErrServerClosed", reason)
	}
	recv(t, blocked.cancelled, "cancelled Connect context")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.srv.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Close returned %v, want ErrServerClosed", err)
	}
}

// badGrants answers one SUBSCRIBE filter with two codes.
type badGrants struct{ testSession }

func (b *badGrants) Subscribe([]Subscription) []byte { return []byte{0, 1} }

type handlerFunc func(context.Context, *ConnectRequest) (Session, ConnackCode)

func (f handlerFunc) Connect(ctx context.Context, r *ConnectRequest) (Session, ConnackCode) {
	return f(ctx, r)
}

// A handler or session bug must not reach the wire as an invalid packet.
func TestHandlerMistakesAreContained(t *testing.T) {
	closed := make(chan error, 1)
	for _, tt := range []struct {
		name      string
		handler   handlerFunc
		connack   []byte
		subscribe bool // the bug shows only on SUBSCRIBE
	}{
		{
			name:    "reserved CONNACK code",
			handler: func(context.Context, *ConnectRequest) (Session, ConnackCode) { return nil, 9 },
			connack: raw(0x20, 2, 0, 3),
		},
		{
			name:    "accepted without a session",
			handler: func(context.Context, *ConnectRequest) (Session, ConnackCode) { return nil, Accepted },
			connack: raw(0x20, 2, 0, 3),
		},
		{
			name: "wrong number of granted codes",
			handler: func(_ context.Context, r *ConnectRequest) (Session, ConnackCode) {
				return &badGrants{testSession{h: newTestHandler(), req: r, closed: closed}}, Accepted
			},
			connack:   connackAccepted,
			subscribe: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := startServer(t, nil, Options{Handler: tt.handler})
			c := dialRaw(t, env)
			c.send(connectPkt(0x02, 0, "buggy"))
			if !tt.subscribe {
				c.expectClosed(tt.connack)
				return
			}
			c.expect(tt.connack)
			c.send(pkt(0x82, u16(1), str("one"), raw(0)))
			c.expectClosed(nil) // no SUBACK with two codes for one filter
			recv(t, closed, "Session.Closed")
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	h := newTestHandler()
	for name, opts := range map[string]Options{
		"no handler":                 {},
		"tiny MaxPacketSize":         {Handler: h, MaxPacketSize: 10},
		"MaxPacketSize above 256 MB": {Handler: h, MaxPacketSize: 1 << 30},
		"negative ConnectTimeout":    {Handler: h, ConnectTimeout: -time.Second},
		"negative PacketTimeout":     {Handler: h, PacketTimeout: -time.Second},
		"negative WriteTimeout":      {Handler: h, WriteTimeout: -time.Second},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("%s: New accepted %+v", name, opts)
		}
	}
	srv, err := New(Options{Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	if srv.opts.MaxPacketSize != 256<<10 || srv.opts.ConnectTimeout != 10*time.Second {
		t.Fatalf("defaults %+v", srv.opts)
	}
	srv.Close()
}

// hookSession publishes from the Started and Subscribed hooks, as the IoT Hub front-end does with queued
// cloud-to-device messages.
type hookSession struct{ *testSession }

func (s hookSession) Started() {
	if _, err := s.req.Conn.Publish("started", nil, 0); err != nil {
		panic(err)
	}
}

func (s hookSession) Subscribed(granted []Subscription) {
	for _, g := range granted {
		if _, err := s.req.Conn.Publish("granted/"+g.Filter, []byte{g.QoS}, 0); err != nil {
			panic(err)
		}
	}
}

// Started runs once the CONNACK is on the wire and Subscribed once the SUBACK is, each told only what was
// granted: what they publish follows the acknowledgement, never precedes it.
func TestStartedAndSubscribedFollowTheirAcknowledgements(t *testing.T) {
	h := newTestHandler()
	h.grant = func(s Subscription) byte {
		if s.Filter == "refused" {
			return 0x80
		}
		return min(s.QoS, 1)
	}
	handler := handlerFunc(func(ctx context.Context, r *ConnectRequest) (Session, ConnackCode) {
		s, code := h.Connect(ctx, r)
		return hookSession{s.(*testSession)}, code
	})
	env := startServer(t, nil, Options{Handler: handler})
	c := dialRaw(t, env)
	c.send(connectPkt(0x02, 0, "hooked"))
	c.expect(connackAccepted)
	c.expect(pkt(0x30, str("started")))
	c.send(pkt(0x82, u16(7), str("a"), raw(2), str("refused"), raw(1)))
	c.expect(raw(0x90, 4, 0, 7, 1, 0x80))
	c.expect(pkt(0x30, str("granted/a"), raw(1)))
}
