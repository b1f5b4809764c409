package dps

import (
	"context"
	"crypto"
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
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
)

// This file is a scripted DPS for unit tests of the client's protocol
// handling: the test decides, request by request, what DPS answers. The
// server side is the emulator's MQTT codec, so the client talks real MQTT
// over real TLS. End-to-end tests against the emulator's own DPS live in
// e2e_test.go.

// fakeDPS records what the client sent and answers through answer.
type fakeDPS struct {
	t      *testing.T
	addr   string
	caFile string
	// connack decides CONNECTs; nil accepts every one.
	connack func(*mqttsrv.ConnectRequest) mqttsrv.ConnackCode
	// answer is called for each PUBLISH from the client, on the connection's
	// goroutine; it answers with reply (or not at all).
	answer func(f *fakeDPS, c *mqttsrv.Conn, req request)

	mu       sync.Mutex
	connects []*mqttsrv.ConnectRequest
	subs     []string
	requests []request
	closed   chan struct{} // a connection ended
}

// request is one PUBLISH the client sent.
type request struct {
	topic   string
	payload []byte
	qos     byte
	at      time.Time
	// afterSubscribe is whether the response subscription came first.
	afterSubscribe bool
}

func startFakeDPS(t *testing.T, answer func(f *fakeDPS, c *mqttsrv.Conn, req request)) *fakeDPS {
	t.Helper()
	ca := newTestCA(t, "fake DPS CA")
	cert := ca.issue(t, "localhost", true)
	f := &fakeDPS{t: t, answer: answer, caFile: ca.pemFile(t), closed: make(chan struct{}, 16)}
	srv, err := mqttsrv.New(mqttsrv.Options{Handler: f, MaxPacketSize: 96 << 10, Logger: zaptest.NewLogger(t).Named("fake-dps")})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = l.Addr().String()
	tl := tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(tl) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return f
}

func (f *fakeDPS) Connect(_ context.Context, req *mqttsrv.ConnectRequest) (mqttsrv.Session, mqttsrv.ConnackCode) {
	f.mu.Lock()
	f.connects = append(f.connects, req)
	f.mu.Unlock()
	if f.connack != nil {
		if code := f.connack(req); code != mqttsrv.Accepted {
			return nil, code
		}
	}
	return &fakeSession{f: f, conn: req.Conn}, mqttsrv.Accepted
}

type fakeSession struct {
	f          *fakeDPS
	conn       *mqttsrv.Conn
	subscribed bool
}

func (s *fakeSession) Subscribe(filters []mqttsrv.Subscription) []byte {
	codes := make([]byte, len(filters))
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	for i, sub := range filters {
		s.f.subs = append(s.f.subs, sub.Filter)
		if sub.Filter != "$dps/registrations/res/#" {
			codes[i] = 0x80 // DPS supports no other filter
			continue
		}
		codes[i] = min(sub.QoS, 1)
		s.subscribed = true
	}
	return codes
}

func (s *fakeSession) Publish(_ context.Context, m *mqttsrv.Message) error {
	req := request{topic: m.Topic, payload: append([]byte(nil), m.Payload...), qos: m.QoS, at: time.Now(), afterSubscribe: s.subscribed}
	s.f.mu.Lock()
	s.f.requests = append(s.f.requests, req)
	s.f.mu.Unlock()
	if s.f.answer != nil {
		s.f.answer(s.f, s.conn, req)
	}
	return nil
}

func (s *fakeSession) Closed(error) { s.f.closed <- struct{}{} }

// reply publishes an answer as DPS does, at QoS 1.
func (f *fakeDPS) reply(c *mqttsrv.Conn, topic, body string) {
	if _, err := c.Publish(topic, []byte(body), 1); err != nil {
		f.t.Logf("fake DPS could not answer on %s: %v", topic, err)
	}
}

func (f *fakeDPS) recorded() ([]*mqttsrv.ConnectRequest, []string, []request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*mqttsrv.ConnectRequest(nil), f.connects...), append([]string(nil), f.subs...), append([]request(nil), f.requests...)
}

// waitClosed waits for a connection to end, which the client must do after
// every Register.
func (f *fakeDPS) waitClosed(t *testing.T) {
	t.Helper()
	select {
	case <-f.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the client did not disconnect")
	}
}

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key := mustECKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func mustECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// issue makes a server certificate for 127.0.0.1 and host.
func (ca *testCA) issue(t testing.TB, host string, server bool) tls.Certificate {
	t.Helper()
	key := mustECKey(t)
	der := ca.sign(t, key.Public(), host, server)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// sign certifies pub under cn, for a server or a client.
func (ca *testCA) sign(t testing.TB, pub crypto.PublicKey, cn string, server bool) []byte {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{cn}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (ca *testCA) pemFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// asError extracts the *Error or fails the test.
func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *dps.Error", err, err)
	}
	return e
}
