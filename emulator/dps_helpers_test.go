package emulator

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dpsagent/dpsagent/emulator/pki"
	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// dpsTestHubs are three hubs with distinct host names, so allocation shows
// in assignedHub.
func dpsTestHubs() []HubConfig {
	return []HubConfig{
		{Name: "hub1", Host: "hub1.iotemu.test", Listen: "127.0.0.1:0"},
		{Name: "hub2", Host: "hub2.iotemu.test", Listen: "127.0.0.1:0"},
		{Name: "hub3", Host: "hub3.iotemu.test", Listen: "127.0.0.1:0"},
	}
}

// startDPSEmulator runs an emulator on loopback with a DPS tuned for tests:
// assignments take 20 ms instead of a second.
func startDPSEmulator(t testing.TB, mutate func(*Config)) (*Emulator, *Endpoints) {
	t.Helper()
	cfg := Config{
		DPS:   ListenerConfig{Listen: "127.0.0.1:0"},
		Hubs:  dpsTestHubs(),
		Admin: ListenerConfig{Listen: "127.0.0.1:0"},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	var log *zap.Logger
	if _, bench := t.(*testing.B); bench {
		log = zap.NewNop()
	} else {
		log = zaptest.NewLogger(t)
	}
	e, err := New(cfg, t.TempDir(), Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	e.dps.assignDelay = 20 * time.Millisecond
	ep, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, ep
}

// dpsKey is a fixed symmetric key (base64), distinct per label.
func dpsKey(label string) string {
	return sas.EncodeKey([]byte(fmt.Sprintf("%-32s", "dps-test-key-"+label)))
}

func dpsSymmetricEnrollment(regID, key string) Enrollment {
	return Enrollment{RegistrationID: regID, Attestation: Attestation{Type: AttestSymmetricKey, PrimaryKey: key}}
}

func dpsGroupEnrollment(groupID, key string) Enrollment {
	return Enrollment{GroupID: groupID, Attestation: Attestation{Type: AttestSymmetricKey, PrimaryKey: key}}
}

// dpsSAS signs a DPS token for regID with the base64 key, valid for an hour.
func dpsSAS(t testing.TB, scope, regID, key string) string {
	t.Helper()
	k, err := sas.DecodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return sas.Sign(sas.DPSResource(scope, regID), k, sas.KeyNameRegistration, time.Now().Add(time.Hour))
}

// dpsGroupSAS signs with the device key derived from a group key.
func dpsGroupSAS(t testing.TB, scope, regID, groupKey string) string {
	t.Helper()
	k, err := sas.DecodeKey(groupKey)
	if err != nil {
		t.Fatal(err)
	}
	return dpsSAS(t, scope, regID, sas.EncodeKey(sas.DeriveDeviceKey(k, regID)))
}

// dpsDial describes a device's connection to DPS.
type dpsDial struct {
	regID      string
	clientID   string // defaults to regID
	username   string // defaults to the documented form
	password   string
	apiVersion string // defaults to dpsCSRVersion
	certs      []tls.Certificate
}

// dpsClient is a device on the real paho client, speaking DPS by hand.
type dpsClient struct {
	t    testing.TB
	c    mqtt.Client
	ep   *Endpoints
	msgs chan mqtt.Message
	lost chan error
	rid  atomic.Int64
}

func (dl dpsDial) options(ep *Endpoints, roots *x509.CertPool) *mqtt.ClientOptions {
	if dl.clientID == "" {
		dl.clientID = dl.regID
	}
	if dl.apiVersion == "" {
		dl.apiVersion = dpsCSRVersion.String()
	}
	if dl.username == "" {
		dl.username = fmt.Sprintf("%s/registrations/%s/api-version=%s&ClientVersion=%s",
			ep.IDScope, dl.regID, dl.apiVersion, url.QueryEscape("iotemu-dps-test/1.0 (go; paho)"))
	}
	o := mqtt.NewClientOptions().AddBroker("ssl://" + ep.DPS).
		SetClientID(dl.clientID).SetUsername(dl.username).SetPassword(dl.password).
		SetCleanSession(true).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).SetKeepAlive(60 * time.Second).
		SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: dl.certs, MinVersion: tls.VersionTLS12})
	return o
}

func dpsRoots(t testing.TB, ep *Endpoints) *x509.CertPool {
	t.Helper()
	pemBytes, err := os.ReadFile(ep.TLSCAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatal("no certificate in " + ep.TLSCAFile)
	}
	return roots
}

// connect dials DPS and returns the CONNECT's error, nil on success.
func (dl dpsDial) connect(t testing.TB, ep *Endpoints) (*dpsClient, error) {
	t.Helper()
	cl := &dpsClient{t: t, ep: ep, msgs: make(chan mqtt.Message, 64), lost: make(chan error, 1)}
	o := dl.options(ep, dpsRoots(t, ep))
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		select {
		case cl.lost <- err:
		default:
		}
	})
	cl.c = mqtt.NewClient(o)
	tok := cl.c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, fmt.Errorf("CONNECT timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { cl.c.Disconnect(0) })
	return cl, nil
}

// mustConnect connects and subscribes to the response topic.
func (dl dpsDial) mustConnect(t testing.TB, ep *Endpoints) *dpsClient {
	t.Helper()
	cl, err := dl.connect(t, ep)
	if err != nil {
		t.Fatalf("connect %s to DPS: %v", dl.regID, err)
	}
	cl.subscribe(dpsResponseFilter, 1)
	return cl
}

func (cl *dpsClient) subscribe(filter string, qos byte) byte {
	cl.t.Helper()
	tok := cl.c.Subscribe(filter, qos, func(_ mqtt.Client, m mqtt.Message) { cl.msgs <- m })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		cl.t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter]
}

func (cl *dpsClient) publish(topic string, payload []byte) {
	cl.t.Helper()
	tok := cl.c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		cl.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// register publishes a register request and returns its $rid.
func (cl *dpsClient) register(body []byte) string {
	rid := strconv.FormatInt(cl.rid.Add(1), 10)
	cl.publish("$dps/registrations/PUT/iotdps-register/?$rid="+rid, body)
	return rid
}

func (cl *dpsClient) poll(operationID string) string {
	rid := strconv.FormatInt(cl.rid.Add(1), 10)
	cl.publish("$dps/registrations/GET/iotdps-get-operationstatus/?$rid="+rid+"&operationId="+url.QueryEscape(operationID), nil)
	return rid
}

// dpsReply is a response as the device sees it.
type dpsReply struct {
	topic      string
	status     int
	retryAfter int // 0 when absent
	qos        byte
	body       []byte
}

// wireStatus and wireState read answers independently of the emulator's
// own types, so a misspelt JSON name fails a test.
type wireStatus struct {
	OperationID       string     `json:"operationId"`
	Status            string     `json:"status"`
	RegistrationState *wireState `json:"registrationState"`
}

type wireState struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUTC     string          `json:"createdDateTimeUtc"`
	AssignedHub            string          `json:"assignedHub"`
	DeviceID               string          `json:"deviceId"`
	Status                 string          `json:"status"`
	Substatus              string          `json:"substatus"`
	ErrorCode              int             `json:"errorCode"`
	ErrorMessage           string          `json:"errorMessage"`
	LastUpdatedDateTimeUTC string          `json:"lastUpdatedDateTimeUtc"`
	ETag                   string          `json:"etag"`
	Payload                json.RawMessage `json:"payload"`
	IssuedCertificateChain []string        `json:"issuedCertificateChain"`
	SymmetricKey           *struct {
		EnrollmentGroupID string `json:"enrollmentGroupId"`
	} `json:"symmetricKey"`
	X509 *struct {
		EnrollmentGroupID string `json:"enrollmentGroupId"`
	} `json:"x509"`
}

type wireError struct {
	ErrorCode    int    `json:"errorCode"`
	TrackingID   string `json:"trackingId"`
	Message      string `json:"message"`
	TimestampUTC string `json:"timestampUtc"`
}

// await returns the response to rid, skipping any others.
func (cl *dpsClient) await(rid string) dpsReply {
	cl.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-cl.msgs:
			r := parseDPSReply(cl.t, m)
			if q := dpsReplyQuery(cl.t, m.Topic()); q.Get("$rid") == rid {
				return r
			}
		case err := <-cl.lost:
			cl.t.Fatalf("connection lost while waiting for $rid %s: %v", rid, err)
		case <-deadline:
			cl.t.Fatalf("no response to $rid %s within 10 s", rid)
		}
	}
}

// silent reports whether no response arrives within d.
func (cl *dpsClient) silent(d time.Duration) bool {
	select {
	case <-cl.msgs:
		return false
	case <-time.After(d):
		return true
	}
}

func dpsReplyQuery(t testing.TB, topic string) url.Values {
	t.Helper()
	_, query, ok := strings.Cut(topic, "/?")
	if !ok {
		t.Fatalf("response topic %q has no query", topic)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		t.Fatalf("response topic %q: %v", topic, err)
	}
	return q
}

func parseDPSReply(t testing.TB, m mqtt.Message) dpsReply {
	t.Helper()
	rest, ok := strings.CutPrefix(m.Topic(), "$dps/registrations/res/")
	if !ok {
		t.Fatalf("response on unexpected topic %q", m.Topic())
	}
	statusText, _, _ := strings.Cut(rest, "/")
	status, err := strconv.Atoi(statusText)
	if err != nil {
		t.Fatalf("response topic %q: status: %v", m.Topic(), err)
	}
	r := dpsReply{topic: m.Topic(), status: status, qos: m.Qos(), body: m.Payload()}
	if ra := dpsReplyQuery(t, m.Topic()).Get("retry-after"); ra != "" {
		if r.retryAfter, err = strconv.Atoi(ra); err != nil {
			t.Fatalf("response topic %q: retry-after: %v", m.Topic(), err)
		}
	}
	return r
}

func (r dpsReply) status200(t testing.TB) wireStatus {
	t.Helper()
	var s wireStatus
	if err := json.Unmarshal(r.body, &s); err != nil {
		t.Fatalf("answer %d %s: %v", r.status, r.body, err)
	}
	return s
}

func (r dpsReply) errorBody(t testing.TB) wireError {
	t.Helper()
	var e wireError
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error answer %d %s: %v", r.status, r.body, err)
	}
	return e
}

// provision runs the whole flow: register, then poll until the answer is
// final; it returns the final answer.
func (cl *dpsClient) provision(body []byte) (dpsReply, wireStatus) {
	cl.t.Helper()
	r := cl.await(cl.register(body))
	if r.status != 202 {
		cl.t.Fatalf("register: %d %s, want 202", r.status, r.body)
	}
	return cl.finish(r.status200(cl.t).OperationID)
}

// finish polls an operation until its answer is final.
func (cl *dpsClient) finish(op string) (dpsReply, wireStatus) {
	cl.t.Helper()
	var r dpsReply
	for range 20 {
		time.Sleep(30 * time.Millisecond)
		r = cl.await(cl.poll(op))
		if r.status != 202 {
			break
		}
	}
	if r.status != 200 {
		cl.t.Fatalf("poll: %d %s, want 200", r.status, r.body)
	}
	return r, r.status200(cl.t)
}

// registerBody is a DeviceRegistration with an optional CSR and payload.
func registerBody(regID string, csr []byte, payload string) []byte {
	m := map[string]any{"registrationId": regID}
	if csr != nil {
		m["csr"] = base64.StdEncoding.EncodeToString(csr)
	}
	if payload != "" {
		m["payload"] = json.RawMessage(payload)
	}
	// Not json.Marshal: it would escape <, > and &, and the test of the
	// payload echo wants them sent as they are.
	var buf strings.Builder
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(m)
	return []byte(strings.TrimSpace(buf.String()))
}

// dpsCSR makes a P-256 key and a CSR for CN=cn.
func dpsCSR(t testing.TB, cn string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key, dpsCSRFor(t, key, cn)
}

func dpsCSRFor(t testing.TB, key crypto.Signer, cn string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// dpsChain decodes issuedCertificateChain.
func dpsChain(t testing.TB, state *wireState) []*x509.Certificate {
	t.Helper()
	if state == nil {
		t.Fatal("no registrationState")
	}
	var certs []*x509.Certificate
	for i, s := range state.IssuedCertificateChain {
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("issuedCertificateChain[%d]: %v", i, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("issuedCertificateChain[%d]: %v", i, err)
		}
		certs = append(certs, c)
	}
	return certs
}

// verifyIssuedChain checks what a device must check (reference §5): leaf
// first holding our key, issuing CA, root; the chain verifies to the device
// root the emulator publishes; the subject is the registration ID.
func verifyIssuedChain(t testing.TB, ep *Endpoints, chain []*x509.Certificate, key crypto.Signer, cn string) {
	t.Helper()
	if len(chain) != 3 {
		t.Fatalf("issued chain has %d certificates, want leaf, issuing CA, root", len(chain))
	}
	leaf := chain[0]
	if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
		t.Error("the leaf does not hold the CSR's public key")
	}
	if leaf.Subject.CommonName != cn {
		t.Errorf("leaf CN = %q, want %q", leaf.Subject.CommonName, cn)
	}
	rootPEM, err := os.ReadFile(ep.DeviceRootFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(rootPEM)
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !chain[2].Equal(root) {
		t.Error("the last certificate of the chain is not the device root")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	inter.AddCert(chain[1])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued chain does not verify to %s: %v", pki.DeviceRootFile, err)
	}
}

// dpsTestCA is a CA for X.509 attestation tests.
type dpsTestCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newDPSTestCA(t testing.TB, name string, parent *dpsTestCA) *dpsTestCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &dpsTestCA{cert: c, key: key}
}

// leaf issues a client certificate for cn; nil ca makes it self-signed.
func dpsLeaf(t testing.TB, cn string, ca *dpsTestCA, notAfter time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if ca != nil {
		issuer, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func dpsPEM(certs ...*x509.Certificate) string {
	var b strings.Builder
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.String()
}

func dpsTLSCert(key crypto.Signer, chain ...*x509.Certificate) tls.Certificate {
	tc := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

func dpsPublicDER(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
