package mqttsrv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

// waitFor bounds every wait on the server in tests. It is a hang guard, not a timing assertion.
const waitFor = 10 * time.Second

// testPKI is a self-signed server certificate for localhost and 127.0.0.1, and a client certificate the server
// does not verify.
type testPKI struct {
	serverCert tls.Certificate
	roots      *x509.CertPool
	rootsPEM   []byte
	clientCert tls.Certificate
	// The client certificate and key in PEM, for command-line clients.
	clientCertPEM, clientKeyPEM []byte
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	server, serverPEM := selfSigned(t, "localhost", x509.ExtKeyUsageServerAuth)
	client, clientPEM := selfSigned(t, "device-1", x509.ExtKeyUsageClientAuth)
	keyDER, err := x509.MarshalPKCS8PrivateKey(client.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(serverPEM)
	return &testPKI{
		serverCert: server, roots: roots, rootsPEM: serverPEM, clientCert: client,
		clientCertPEM: clientPEM,
		clientKeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

func selfSigned(t testing.TB, cn string, usage x509.ExtKeyUsage) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{usage},
		BasicConstraintsValid: true,
		IsCA:                  true, // so that it can be its own trust anchor for OpenSSL clients
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.DNSNames = []string{cn}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func (p *testPKI) serverConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.serverCert},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

func (p *testPKI) clientConfig(withCert bool) *tls.Config {
	// A host name, not the IP address dialled: clients send no SNI for an IP literal (RFC 6066).
	cfg := &tls.Config{RootCAs: p.roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if withCert {
		cfg.Certificates = []tls.Certificate{p.clientCert}
	}
	return cfg
}

// testEnv is a running server with a recording handler.
type testEnv struct {
	srv     *Server
	addr    string
	pki     *testPKI // nil on a plain listener
	handler *testHandler
	serving chan error
}

// startServer serves on 127.0.0.1 (TLS when pki is non-nil) and, at cleanup, closes the server and checks
// that it returned, that Serve ended with ErrServerClosed, and that no goroutine started by the test remains.
func startServer(t testing.TB, pki *testPKI, opts Options) *testEnv {
	t.Helper()
	leakOpt := goleak.IgnoreCurrent()
	if opts.Handler == nil {
		opts.Handler = newTestHandler()
	}
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if pki != nil {
		l = tls.NewListener(l, pki.serverConfig())
	}
	env := &testEnv{srv: srv, addr: l.Addr().String(), pki: pki, serving: make(chan error, 1)}
	env.handler, _ = opts.Handler.(*testHandler)
	go func() { env.serving <- srv.Serve(l) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-env.serving; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		if tt, ok := t.(*testing.T); ok {
			goleak.VerifyNone(tt, leakOpt)
		}
	})
	return env
}

// testHandler accepts every connection (unless code says otherwise) with a testSession, and hands each
// session to the test through sessions.
type testHandler struct {
	code     ConnackCode
	present  bool
	sessions chan *testSession
	registry *Registry
	// onConnect, if set, runs inside Connect (for tests of what a handler may do there).
	onConnect func(req *ConnectRequest)
	// publishErr, if set, decides the session's answer to each message.
	publishErr func(m *Message) error
	// grant maps a requested QoS to the granted code; nil grants min(requested, 1) as DPS does.
	grant func(Subscription) byte
}

func newTestHandler() *testHandler {
	return &testHandler{sessions: make(chan *testSession, 16), registry: &Registry{}}
}

func (h *testHandler) Connect(ctx context.Context, req *ConnectRequest) (Session, ConnackCode) {
	if h.onConnect != nil {
		h.onConnect(req)
	}
	s := &testSession{
		h:            h,
		req:          req,
		published:    make(chan *Message, 64),
		subscribed:   make(chan []Subscription, 16),
		unsubscribed: make(chan []string, 16),
		closed:       make(chan error, 1),
	}
	if h.code != Accepted {
		return nil, h.code
	}
	h.registry.Register(req.ClientID, req.Conn)
	h.sessions <- s
	return s, Accepted
}

// testSession records what it is told. Messages to "echo/X" are answered on "reply/X" at the same QoS (at
// most 1), from inside Publish, as the DPS front-end answers a register request.
type testSession struct {
	h            *testHandler
	req          *ConnectRequest
	published    chan *Message
	subscribed   chan []Subscription
	unsubscribed chan []string
	closed       chan error

	mu       sync.Mutex
	closures int
}

func (s *testSession) Subscribe(filters []Subscription) []byte {
	s.subscribed <- filters
	granted := make([]byte, len(filters))
	for i, f := range filters {
		if s.h.grant != nil {
			granted[i] = s.h.grant(f)
		} else {
			granted[i] = min(f.QoS, 1)
		}
	}
	return granted
}

func (s *testSession) Unsubscribe(filters []string) { s.unsubscribed <- filters }

func (s *testSession) Publish(ctx context.Context, m *Message) error {
	if s.h.publishErr != nil {
		if err := s.h.publishErr(m); err != nil {
			return err
		}
	}
	s.published <- m
	if rest, ok := strings.CutPrefix(m.Topic, "echo/"); ok {
		if _, err := s.req.Conn.Publish("reply/"+rest, m.Payload, min(m.QoS, 1)); err != nil {
			return err
		}
	}
	return nil
}

func (s *testSession) SessionPresent() bool { return s.h.present }

func (s *testSession) Closed(reason error) {
	s.mu.Lock()
	s.closures++
	n := s.closures
	s.mu.Unlock()
	if n != 1 {
		panic("Session.Closed called more than once")
	}
	s.h.registry.Unregister(s.req.ClientID, s.req.Conn)
	s.closed <- reason
}

// recv returns the next value from ch, failing the test if none comes.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatalf("no %s within %s", what, waitFor)
		panic("unreachable")
	}
}
