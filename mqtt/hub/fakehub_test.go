package hub_test

// A scripted hub on the emulator's MQTT server: each test decides what the
// "hub" answers, to drive the session through paths the real emulator does
// not take on demand (lost answers, stale updates, hostile messages).

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
	"github.com/dpsagent/dpsagent/mqtt/hub"
)

const fakeHost = "fakehub.test"

type fakeHub struct {
	t     *testing.T
	addr  string
	roots *x509.CertPool

	mu       sync.Mutex
	connects []mqttsrv.ConnectRequest
	subs     [][]mqttsrv.Subscription
	refusals []mqttsrv.ConnackCode // answers to the next CONNECTs; then accepted
	refuse   map[string]bool       // filters refused in the SUBACK
	sessions []*fakeSession

	// published receives every message the device publishes.
	published chan published
}

// published is a device's message and the connection it came on.
type published struct {
	s   *fakeSession
	msg *mqttsrv.Message
}

type fakeSession struct {
	h    *fakeHub
	conn *mqttsrv.Conn
}

func startFakeHub(t *testing.T) *fakeHub {
	t.Helper()
	h := &fakeHub{t: t, refuse: map[string]bool{}, published: make(chan published, 64)}
	cert, roots := selfSignedServer(t)
	srv, err := mqttsrv.New(mqttsrv.Options{Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr, h.roots = l.Addr().String(), roots
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert}))
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return h
}

func selfSignedServer(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: fakeHost}, DNSNames: []string{fakeHost},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func (h *fakeHub) Connect(_ context.Context, req *mqttsrv.ConnectRequest) (mqttsrv.Session, mqttsrv.ConnackCode) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.connects = append(h.connects, *req)
	if len(h.refusals) > 0 {
		code := h.refusals[0]
		h.refusals = h.refusals[1:]
		return nil, code
	}
	s := &fakeSession{h: h, conn: req.Conn}
	h.sessions = append(h.sessions, s)
	return s, mqttsrv.Accepted
}

// session is the newest accepted connection. Connect has returned by the
// time a test calls it, so the session is subscribed.
func (h *fakeHub) session() *fakeSession {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[len(h.sessions)-1]
}

func (s *fakeSession) Subscribe(filters []mqttsrv.Subscription) []byte {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.h.subs = append(s.h.subs, filters)
	codes := make([]byte, len(filters))
	for i, f := range filters {
		codes[i] = min(f.QoS, 1)
		if s.h.refuse[f.Filter] {
			codes[i] = 0x80
		}
	}
	return codes
}

func (s *fakeSession) Publish(_ context.Context, m *mqttsrv.Message) error {
	s.h.published <- published{s: s, msg: m}
	return nil
}

func (s *fakeSession) Closed(error) {}

// send publishes to the device on this connection.
func (s *fakeSession) send(topic string, body []byte) {
	if _, err := s.conn.Publish(topic, body, 0); err != nil {
		s.h.t.Logf("fake hub: publish %s: %v", topic, err)
	}
}

// next returns the device's next message on a topic starting with prefix,
// answering twin GETs with an empty twin on the way (the session reads the
// twin after every connect when it has OnDesired).
func (h *fakeHub) next(prefix string) published {
	h.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case p := <-h.published:
			if strings.HasPrefix(p.msg.Topic, prefix) {
				return p
			}
		case <-timeout:
			h.t.Fatalf("the device published nothing on %s", prefix)
		}
	}
}

func (h *fakeHub) connectCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.connects)
}

func (h *fakeHub) options(t *testing.T) hub.Options {
	return hub.Options{
		Host: fakeHost, Address: h.addr, DeviceID: "dev1",
		Auth:    hub.Auth{SymmetricKey: []byte("0123456789abcdef")},
		RootCAs: h.roots,
		Logger:  zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
		Random:  func() float64 { return 0 },
	}
}

func (h *fakeHub) connect(t *testing.T, opts hub.Options) *hub.Client {
	t.Helper()
	c, err := hub.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Connect(testContext(t)); err != nil {
		t.Fatal(err)
	}
	return c
}

// issueRequest is a credential request as the fake hub received it.
type issueRequest struct {
	s       *fakeSession
	rid     string
	id, csr string
	replace *string
}

func (h *fakeHub) nextIssue() issueRequest {
	h.t.Helper()
	p := h.next("$iothub/credentials/POST/issueCertificate/")
	var body struct {
		ID      string  `json:"id"`
		CSR     string  `json:"csr"`
		Replace *string `json:"replace"`
	}
	dec := json.NewDecoder(strings.NewReader(string(p.msg.Payload)))
	dec.DisallowUnknownFields() // the hub refuses unknown fields (400004)
	if err := dec.Decode(&body); err != nil {
		h.t.Fatalf("credential request body %s: %v", p.msg.Payload, err)
	}
	_, query, _ := strings.Cut(p.msg.Topic, "?")
	rid := strings.TrimPrefix(query, "$rid=")
	return issueRequest{s: p.s, rid: rid, id: body.ID, csr: body.CSR, replace: body.Replace}
}

func (r issueRequest) answer(status int, body string) {
	r.s.send("$iothub/credentials/res/"+itoa(status)+"/?$rid="+r.rid, []byte(body))
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

// A CSR the client accepts; the fake hub does not look inside.
func someCSR(t *testing.T) []byte { return newCSR(t, newKey(t), "dev1") }

const fakeChainB64 = `"MAMCAQE=","MAMCAQI="` // two tiny DER blobs

func TestFakeHubConnectParameters(t *testing.T) {
	h := startFakeHub(t)
	opts := h.options(t)
	opts.UserAgent = "gateway app/2.0"
	c := h.connect(t, opts)
	_ = c

	h.mu.Lock()
	defer h.mu.Unlock()
	req := h.connects[0]
	if req.ClientID != "dev1" {
		t.Errorf("client ID %q, want the device ID", req.ClientID)
	}
	if want := "fakehub.test/dev1/?api-version=2025-08-01-preview&DeviceClientType=gateway%20app%2F2.0"; req.Username != want {
		t.Errorf("user name %q\nwant      %q", req.Username, want)
	}
	if !strings.HasPrefix(string(req.Password), "SharedAccessSignature sr=fakehub.test%2Fdevices%2Fdev1&sig=") {
		t.Errorf("password %q is not a hub device token", req.Password)
	}
	if req.CleanSession || req.KeepAlive != 240*time.Second {
		t.Errorf("clean session %v, keep-alive %s; want a persistent session and 240 s", req.CleanSession, req.KeepAlive)
	}
	if req.TLS == nil || req.TLS.ServerName != fakeHost {
		t.Errorf("TLS server name is not the hub host")
	}
	got := map[string]byte{}
	for _, batch := range h.subs {
		for _, s := range batch {
			got[s.Filter] = s.QoS
		}
	}
	want := map[string]byte{
		"$iothub/twin/res/#": 0, "$iothub/twin/PATCH/properties/desired/#": 0, "$iothub/methods/POST/#": 0,
		"$iothub/credentials/res/#": 0, "devices/dev1/messages/devicebound/#": 1,
	}
	if len(got) != len(want) {
		t.Fatalf("subscriptions %v, want the hub's limit of five: %v", got, want)
	}
	for f, q := range want {
		if qos, ok := got[f]; !ok || qos != q {
			t.Errorf("subscription %s: QoS %d (present %v), want %d", f, qos, ok, q)
		}
	}
}

func TestFakeHubConnectRefusals(t *testing.T) {
	for _, tc := range []struct {
		code         mqttsrv.ConnackCode
		unauthorized bool
	}{
		{mqttsrv.RefusedNotAuthorized, true},
		{mqttsrv.RefusedBadUsernameOrPassword, true},
		{mqttsrv.RefusedIdentifierRejected, false},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			h := startFakeHub(t)
			h.refusals = []mqttsrv.ConnackCode{tc.code, tc.code, tc.code}
			c, err := hub.New(h.options(t))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.Connect(testContext(t))
			var ce *hub.ConnectError
			if !errors.As(err, &ce) || ce.Code != byte(tc.code) || errors.Is(err, hub.ErrUnauthorized) != tc.unauthorized || ce.Retryable() {
				t.Fatalf("Connect = %v, want refusal %d (unauthorized %v), not retryable", err, tc.code, tc.unauthorized)
			}
			if n := h.connectCount(); n != 1 {
				t.Errorf("%d CONNECTs, want exactly one: a refusal is not retried, nor retried as MQTT 3.1", n)
			}
			if s := c.Status(); s.State != hub.StateStopped {
				t.Errorf("state %s, want stopped", s.State)
			}
		})
	}
}

// The 202 arrives, then the connection drops before the 200: the request is
// resubmitted on the new connection with the same ID, replacing itself.
func TestFakeHubIssueCertificateLostAnswer(t *testing.T) {
	h := startFakeHub(t)
	c := h.connect(t, h.options(t))
	type result struct {
		chain [][]byte
		err   error
	}
	done := make(chan result, 1)
	go func() {
		chain, err := c.IssueCertificate(context.Background(), someCSR(t))
		done <- result{chain, err}
	}()

	first := h.nextIssue()
	if first.replace != nil || first.id != "dev1" || first.csr == "" {
		t.Fatalf("first request %+v: want id and csr, no replace", first)
	}
	first.answer(202, `{"correlationId":"c1","operationExpires":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}`)
	// Whether the 202 arrives before the drop or is lost with it, the
	// session must resubmit the same way.
	first.s.conn.Close(errors.New("dropped by the test"))

	second := h.nextIssue()
	if second.rid != first.rid || second.replace == nil || *second.replace != first.rid {
		t.Fatalf("resubmission rid %q replace %v; want rid %q replacing itself", second.rid, second.replace, first.rid)
	}
	second.answer(202, `{"correlationId":"c2","operationExpires":"2099-01-01T00:00:00Z"}`)
	second.answer(200, `{"correlationId":"c2","certificates":[`+fakeChainB64+`]}`)
	r := <-done
	if r.err != nil || len(r.chain) != 2 {
		t.Fatalf("IssueCertificate = %d certificates, %v", len(r.chain), r.err)
	}
}

// A resubmission finds nothing to replace (the hub lost the request): a
// fresh request follows, with a new ID and no replace.
func TestFakeHubIssueCertificatePreconditionFailed(t *testing.T) {
	h := startFakeHub(t)
	c := h.connect(t, h.options(t))
	done := make(chan error, 1)
	go func() {
		_, err := c.IssueCertificate(context.Background(), someCSR(t))
		done <- err
	}()
	first := h.nextIssue()
	first.s.conn.Close(errors.New("dropped before any answer"))
	second := h.nextIssue()
	if second.replace == nil || *second.replace != first.rid {
		t.Fatalf("resubmission replace %v, want %q", second.replace, first.rid)
	}
	second.answer(412, `{"errorCode":412001,"message":"no pending request"}`)
	third := h.nextIssue()
	if third.rid == first.rid || third.replace != nil {
		t.Fatalf("after 412: rid %q replace %v; want a fresh request", third.rid, third.replace)
	}
	third.answer(200, `[`+fakeChainB64+`]`)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A 409 is resubmitted once with replace "*"; a second 409 is the caller's.
func TestFakeHubIssueCertificateConflictOnce(t *testing.T) {
	h := startFakeHub(t)
	c := h.connect(t, h.options(t))
	done := make(chan error, 1)
	go func() {
		_, err := c.IssueCertificate(context.Background(), someCSR(t))
		done <- err
	}()
	conflict := `{"errorCode":409005,"message":"active","info":{"requestId":"other","operationExpires":"2099-01-01T00:00:00Z"}}`
	first := h.nextIssue()
	first.answer(409, conflict)
	second := h.nextIssue()
	if second.replace == nil || *second.replace != "*" {
		t.Fatalf("after 409: replace %v, want \"*\"", second.replace)
	}
	second.answer(409, conflict)
	err := <-done
	var he *hub.Error
	if !errors.As(err, &he) || he.Status != 409 || he.Code != 409005 || he.Info == nil || he.Info.RequestID != "other" || he.Retryable() {
		t.Fatalf("second 409: %v, want it returned as a *hub.Error with its info", err)
	}
}

// Without any answer, the request is resubmitted (replacing itself) a
// bounded number of times, then given up.
func TestFakeHubIssueCertificateNoAnswer(t *testing.T) {
	h := startFakeHub(t)
	opts := h.options(t)
	opts.ResponseTimeout = 100 * time.Millisecond
	c := h.connect(t, opts)
	_, err := c.IssueCertificate(testContext(t), someCSR(t))
	if !errors.Is(err, hub.ErrNoAnswer) {
		t.Fatalf("IssueCertificate = %v, want ErrNoAnswer", err)
	}
	var rids []string
	var replaces []string
	for range 6 {
		r := h.nextIssue()
		rids = append(rids, r.rid)
		if r.replace != nil {
			replaces = append(replaces, *r.replace)
		}
	}
	for i := range rids {
		if rids[i] != rids[0] {
			t.Errorf("submission %d used rid %q, want the same request %q", i, rids[i], rids[0])
		}
	}
	if len(replaces) != 5 {
		t.Errorf("%d resubmissions replaced the pending request, want 5", len(replaces))
	}
}

// The operation expires without a certificate: the caller is told.
func TestFakeHubIssueCertificateOperationExpires(t *testing.T) {
	h := startFakeHub(t)
	c := h.connect(t, h.options(t))
	done := make(chan error, 1)
	go func() {
		_, err := c.IssueCertificate(context.Background(), someCSR(t))
		done <- err
	}()
	r := h.nextIssue()
	r.answer(202, `{"correlationId":"c","operationExpires":"`+time.Now().Add(300*time.Millisecond).UTC().Format(time.RFC3339Nano)+`"}`)
	select {
	case err := <-done:
		if !errors.Is(err, hub.ErrOperationExpired) {
			t.Fatalf("IssueCertificate = %v, want ErrOperationExpired", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting after the operation expired")
	}
}

// An error after the 202 (the backend refused the CSR) ends the request.
func TestFakeHubIssueCertificateErrorAfterAccepted(t *testing.T) {
	h := startFakeHub(t)
	c := h.connect(t, h.options(t))
	done := make(chan error, 1)
	go func() {
		_, err := c.IssueCertificate(context.Background(), someCSR(t))
		done <- err
	}()
	r := h.nextIssue()
	r.answer(202, `{"correlationId":"c","operationExpires":"2099-01-01T00:00:00Z"}`)
	r.answer(400, `{"errorCode":400037,"message":"CSR validation failed","trackingId":"t","info":{"credentialError":"400000","credentialMessage":"key type not allowed"}}`)
	err := <-done
	var he *hub.Error
	if !errors.As(err, &he) || he.Code != 400037 || he.Info.CredentialError != "400000" || !strings.Contains(err.Error(), "key type not allowed") {
		t.Fatalf("IssueCertificate = %v", err)
	}
}

func TestIssueCertificateRefusesBadCSRLocally(t *testing.T) {
	h := startFakeHub(t)
	c := h.connect(t, h.options(t))
	good := someCSR(t)
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-5] ^= 0xff // the signature no longer verifies
	for name, csr := range map[string][]byte{
		"empty":     nil,
		"PEM":       []byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"),
		"oversized": make([]byte, 9000),
		"tampered":  tampered,
	} {
		if _, err := c.IssueCertificate(testContext(t), csr); err == nil {
			t.Errorf("%s CSR accepted", name)
		}
	}
	select {
	case p := <-h.published:
		t.Errorf("a bad CSR reached the hub: %s", p.msg.Topic)
	default:
	}
}

// A hub that refuses the credential subscription does not offer the API;
// the session still works, and IssueCertificate says why it cannot.
func TestFakeHubRefusedSubscription(t *testing.T) {
	h := startFakeHub(t)
	h.refuse["$iothub/credentials/res/#"] = true
	c := h.connect(t, h.options(t))
	if _, err := c.IssueCertificate(testContext(t), someCSR(t)); err == nil || !strings.Contains(err.Error(), "credential API") {
		t.Fatalf("IssueCertificate = %v, want an error explaining the hub has no credential API", err)
	}
	go func() {
		p := h.next("$iothub/twin/GET/")
		_, q, _ := strings.Cut(p.msg.Topic, "?")
		p.s.send("$iothub/twin/res/200/?"+q, []byte(`{"desired":{"$version":1},"reported":{"$version":1}}`))
	}()
	if _, _, _, _, err := c.GetTwin(testContext(t)); err != nil {
		t.Fatalf("the twin should still work: %v", err)
	}
}

// Desired updates: the full section after connecting, patches in order,
// stale and malformed ones dropped; the session survives hostile messages.
func TestFakeHubDesiredAndHostileMessages(t *testing.T) {
	h := startFakeHub(t)
	type update struct {
		patch   map[string]any
		version int
	}
	updates := make(chan update, 16)
	opts := h.options(t)
	opts.OnDesired = func(p map[string]any, v int) { updates <- update{p, v} }
	c := h.connect(t, opts)

	get := h.next("$iothub/twin/GET/")
	_, q, _ := strings.Cut(get.msg.Topic, "?")
	s := get.s
	s.send("$iothub/twin/res/200/?"+q, []byte(`{"desired":{"mode":"eco","$version":4},"reported":{"$version":9}}`))
	if u := <-updates; u.version != 4 || u.patch["mode"] != "eco" {
		t.Fatalf("after connecting: %+v, want the desired section at version 4", u)
	}

	for _, m := range []struct{ topic, body string }{
		{"$iothub/twin/PATCH/properties/desired/?$version=5", `not json`},
		{"$iothub/twin/PATCH/properties/desired/?$version=5", `{"a":1,"$version":"5"}`},
		{"$iothub/twin/PATCH/properties/desired/?$version=x", `{"a":1}`},
		{"$iothub/twin/PATCH/properties/desired/?$version=5", `{"big":"` + strings.Repeat("A", 1<<20) + `"}`},
		{"$iothub/twin/PATCH/properties/desired/?$version=5", strings.Repeat("[", 100000)},
		{"$iothub/twin/PATCH/properties/desired/?$version=3", `{"stale":true,"$version":3}`},
		{"$iothub/twin/res/200/?$rid=nobody-asked", `{"desired":{}}`},
		{"$iothub/credentials/res/200/?$rid=nobody-asked", `[]`},
		{"$iothub/methods/POST/nomethodrid/", `{}`},
		{"devices/dev1/messages/devicebound/%zz", `x`},
		{"unrelated/topic", `x`},
		{"$iothub/twin/PATCH/properties/desired/?$version=5", `{"mode":"turbo","$version":5}`},
		{"$iothub/twin/PATCH/properties/desired/?$version=5", `{"mode":"duplicate","$version":5}`},
		{"$iothub/twin/PATCH/properties/desired/?$version=6", `{"mode":null}`}, // version only in the topic
	} {
		s.send(m.topic, []byte(m.body))
	}
	if u := <-updates; u.version != 5 || u.patch["mode"] != "turbo" {
		t.Fatalf("next update %+v, want version 5 (malformed and stale ones dropped)", u)
	}
	if u := <-updates; u.version != 6 || len(u.patch) != 1 {
		t.Fatalf("next update %+v, want version 6 from the topic", u)
	}
	select {
	case u := <-updates:
		t.Fatalf("unexpected update %+v", u)
	case <-time.After(100 * time.Millisecond):
	}
	if s := c.Status(); s.State != hub.StateConnected {
		t.Fatalf("the session did not survive: %+v", s)
	}
}

func TestFakeHubMethods(t *testing.T) {
	h := startFakeHub(t)
	opts := h.options(t)
	opts.OnMethod = func(_ context.Context, name string, payload []byte) (int, []byte) {
		switch name {
		case "echo":
			return 200, payload
		case "broken":
			return 200, []byte("not json")
		case "badstatus":
			return -1, nil
		case "empty":
			return 204, nil
		}
		return 404, []byte(`{"error":"no such method"}`)
	}
	h.connect(t, opts)
	s := h.session()
	for _, tc := range []struct {
		topic, body     string
		answerTopic     string
		answerBodyCheck func(string) bool
	}{
		{"$iothub/methods/POST/echo/?$rid=7", `{"x":[1,2]}`, "$iothub/methods/res/200/?$rid=7", func(b string) bool { return b == `{"x":[1,2]}` }},
		{"$iothub/methods/POST/broken/?$rid=8", `{}`, "$iothub/methods/res/500/?$rid=8", func(b string) bool { return json.Valid([]byte(b)) }},
		{"$iothub/methods/POST/badstatus/?$rid=9", `{}`, "$iothub/methods/res/500/?$rid=9", func(b string) bool { return json.Valid([]byte(b)) }},
		{"$iothub/methods/POST/empty/?$rid=10", `null`, "$iothub/methods/res/204/?$rid=10", func(b string) bool { return b == "" }},
		{"$iothub/methods/POST/other/?$rid=a1", ``, "$iothub/methods/res/404/?$rid=a1", func(b string) bool { return strings.Contains(b, "no such method") }},
	} {
		s.send(tc.topic, []byte(tc.body))
		p := h.next("$iothub/methods/res/")
		if p.msg.Topic != tc.answerTopic || !tc.answerBodyCheck(string(p.msg.Payload)) {
			t.Errorf("%s: answered %s %q, want %s", tc.topic, p.msg.Topic, p.msg.Payload, tc.answerTopic)
		}
	}
}

func TestFakeHubMethodsWithoutHandler(t *testing.T) {
	h := startFakeHub(t)
	h.connect(t, h.options(t))
	h.session().send("$iothub/methods/POST/reboot/?$rid=1", []byte(`{}`))
	if p := h.next("$iothub/methods/res/"); p.msg.Topic != "$iothub/methods/res/501/?$rid=1" {
		t.Errorf("answered on %s, want 501", p.msg.Topic)
	}
}

func TestFakeHubCloudToDeviceMessages(t *testing.T) {
	h := startFakeHub(t)
	type message struct {
		body  string
		props map[string]string
	}
	got := make(chan message, 4)
	opts := h.options(t)
	opts.OnMessage = func(body []byte, props map[string]string) { got <- message{string(body), props} }
	h.connect(t, opts)
	if _, err := h.session().conn.Publish("devices/dev1/messages/devicebound/%24.mid=m1&%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound&color=dark%20blue", []byte("hello"), 1); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.body != "hello" || m.props["$.mid"] != "m1" || m.props["color"] != "dark blue" || m.props["$.to"] != "/devices/dev1/messages/devicebound" {
			t.Errorf("message %+v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message delivered")
	}
}
