package emulator

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dpsagent/dpsagent/emulator/mqttsrv"
	"github.com/dpsagent/dpsagent/emulator/pki"
	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// hubWait bounds every wait in the hub tests. It is a hang guard, not a
// timing assertion.
const hubWait = 10 * time.Second

// Host names of the two hubs of the test emulator. The server certificate
// covers them and 127.0.0.1, where both listen.
const (
	hub1Host = "hub1.iotemu.test"
	hub2Host = "hub2.iotemu.test"
)

// The API versions of the SDKs: IoT Hub's documented GA version, and the one
// the credential API preview SDKs send.
const (
	hubAPIGA      = "2021-04-12"
	hubAPIPreview = "2025-08-01-preview"
)

type hubEnv struct {
	e         *Emulator
	ep        *Endpoints
	roots     *x509.CertPool
	logs      *observer.ObservedLogs
	closeOnce sync.Once
}

// close closes the emulator once, whether a test or the cleanup asks first.
func (env *hubEnv) close() { env.closeOnce.Do(func() { _ = env.e.Close() }) }

// newHubEnv runs an emulator with two hubs on loopback. The credential API
// answers after 100 ms unless mutate says otherwise.
func newHubEnv(t *testing.T, mutate func(*Config)) *hubEnv {
	t.Helper()
	return newHubEnvClock(t, mutate, nil)
}

// newHubEnvClock is newHubEnv with the emulator's clock; nil is time.Now.
func newHubEnvClock(t *testing.T, mutate func(*Config), now func() time.Time) *hubEnv {
	t.Helper()
	cfg := Config{
		DPS: ListenerConfig{Listen: "127.0.0.1:0"},
		Hubs: []HubConfig{
			{Name: "hub1", Host: hub1Host, Listen: "127.0.0.1:0"},
			{Name: "hub2", Host: hub2Host, Listen: "127.0.0.1:0"},
		},
		Admin:        ListenerConfig{Listen: "127.0.0.1:0"},
		Certificates: CertificatesConfig{CredentialAPIDelay: Duration(100 * time.Millisecond)},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	return openHubEnv(t, cfg, t.TempDir(), now, nil)
}

// openHubEnv runs an emulator with cfg over the data directory dir; now nil
// is time.Now, and prepare, if not nil, adjusts the emulator before it starts.
func openHubEnv(t *testing.T, cfg Config, dir string, now func() time.Time, prepare func(*Emulator)) *hubEnv {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	e, err := New(cfg, dir, Options{Logger: log, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(e)
	}
	ep, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	env := &hubEnv{e: e, ep: ep, logs: logs}
	t.Cleanup(env.close)
	pem, err := os.ReadFile(ep.TLSCAFile)
	if err != nil {
		t.Fatal(err)
	}
	env.roots = x509.NewCertPool()
	if !env.roots.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in " + ep.TLSCAFile)
	}
	return env
}

// hub1 is the first hub's front-end, for calls the admin API makes.
func (env *hubEnv) hub1() *hub { return env.e.hubs["hub1"] }

// addSASDevice assigns a symmetric-key device to hub and returns its key.
func (env *hubEnv) addSASDevice(t *testing.T, id, hubName string) []byte {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	env.e.State().AssignDevice(Device{DeviceID: id, RegistrationID: id, Hub: hubName, SymmetricKeys: [][]byte{key}}, true)
	return key
}

// device returns the State's record of a device.
func (env *hubEnv) device(t *testing.T, id string) Device {
	t.Helper()
	d, ok := env.e.State().Device(id)
	if !ok {
		t.Fatalf("no device %q in the State", id)
	}
	return d
}

// waitLog waits for a log entry whose message contains msg, for outcomes a
// device cannot observe (an answer lost).
func (env *hubEnv) waitLog(t *testing.T, msg string) {
	t.Helper()
	deadline := time.Now().Add(hubWait)
	for time.Now().Before(deadline) {
		if env.logs.FilterMessageSnippet(msg).Len() > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no log entry %q", msg)
}

// hubSASToken signs a hub token for id, valid until expiry.
func hubSASToken(host, id string, key []byte, expiry time.Time) string {
	return sas.Sign(sas.HubResource(host, id), key, "", expiry)
}

func hubUser(host, id, apiVersion string) string {
	return host + "/" + id + "/?api-version=" + apiVersion + "&DeviceClientType=iotemu-test%2F1.0"
}

// hubDial describes one client connection.
type hubDial struct {
	clientID string
	username string
	password string // empty: no password at all
	cert     *tls.Certificate
	clean    bool
	hub      string // "hub1" unless set
	will     *mqttsrv.Message
	noAck    bool // receive QoS 1 messages without sending their PUBACK
}

// hubClient is a paho client whose received messages, whatever the topic, go
// to msgs in arrival order.
type hubClient struct {
	mqtt.Client
	msgs    chan mqtt.Message
	lost    chan error
	present bool
}

// connect dials a hub with the real paho client over TLS and returns the
// client and the CONNACK code. A refused client is returned closed.
func (env *hubEnv) connect(t *testing.T, d hubDial) (*hubClient, byte) {
	t.Helper()
	hubName, host := "hub1", hub1Host
	if d.hub == "hub2" {
		hubName, host = "hub2", hub2Host
	}
	tlsConf := &tls.Config{RootCAs: env.roots, ServerName: host, MinVersion: tls.VersionTLS12}
	if d.cert != nil {
		tlsConf.Certificates = []tls.Certificate{*d.cert}
	}
	c := &hubClient{msgs: make(chan mqtt.Message, 256), lost: make(chan error, 1)}
	opts := mqtt.NewClientOptions().
		AddBroker("ssl://" + env.ep.Hubs[hubName].Address).
		SetClientID(d.clientID).
		SetUsername(d.username).
		SetTLSConfig(tlsConf).
		SetCleanSession(d.clean).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(hubWait).
		SetAutoAckDisabled(d.noAck).
		SetWriteTimeout(hubWait).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { c.msgs <- m }).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { c.lost <- err })
	if d.password != "" {
		opts.SetPassword(d.password)
	}
	if d.will != nil {
		opts.SetBinaryWill(d.will.Topic, d.will.Payload, d.will.QoS, d.will.Retain)
	}
	c.Client = mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(hubWait) {
		t.Fatal("paho Connect did not finish")
	}
	ct := tok.(*mqtt.ConnectToken)
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(0) })
	}
	c.present = ct.SessionPresent()
	return c, ct.ReturnCode()
}

// mustConnect connects and fails the test unless the hub accepts.
func (env *hubEnv) mustConnect(t *testing.T, d hubDial) *hubClient {
	t.Helper()
	c, code := env.connect(t, d)
	if code != 0 {
		t.Fatalf("CONNECT as %q refused with CONNACK %d", d.clientID, code)
	}
	return c
}

// connectSAS connects a SAS device to hub1 with the given API version.
func (env *hubEnv) connectSAS(t *testing.T, id string, key []byte, apiVersion string) *hubClient {
	t.Helper()
	return env.mustConnect(t, hubDial{
		clientID: id, username: hubUser(hub1Host, id, apiVersion),
		password: hubSASToken(hub1Host, id, key, time.Now().Add(time.Hour)), clean: true,
	})
}

// subscribe subscribes to each filter in turn, one SUBSCRIBE each (paho
// sends the filters of one SUBSCRIBE in map order), and returns the granted
// codes.
func (c *hubClient) subscribe(t *testing.T, filters ...string) []byte {
	t.Helper()
	codes := make([]byte, len(filters))
	for i, f := range filters {
		tok := c.Subscribe(f, 1, func(_ mqtt.Client, m mqtt.Message) { c.msgs <- m })
		hubWaitToken(t, tok, "subscribe to "+f)
		codes[i] = tok.(*mqtt.SubscribeToken).Result()[f]
	}
	return codes
}

// mustSubscribe subscribes and fails the test unless every filter is granted.
func (c *hubClient) mustSubscribe(t *testing.T, filters ...string) {
	t.Helper()
	for i, code := range c.subscribe(t, filters...) {
		if code == 0x80 {
			t.Fatalf("subscription to %q refused", filters[i])
		}
	}
}

func (c *hubClient) publish(t *testing.T, topic string, qos byte, payload []byte) {
	t.Helper()
	hubWaitToken(t, c.Publish(topic, qos, false, payload), "publish to "+topic)
}

// next returns the next message the client receives.
func (c *hubClient) next(t *testing.T) mqtt.Message {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case err := <-c.lost:
		t.Fatalf("connection lost while waiting for a message: %v", err)
	case <-time.After(hubWait):
		t.Fatal("no message within the hang guard")
	}
	return nil
}

// expect returns the next message and fails unless its topic is topic.
func (c *hubClient) expect(t *testing.T, topic string) mqtt.Message {
	t.Helper()
	m := c.next(t)
	if m.Topic() != topic {
		t.Fatalf("received %s %s, want topic %s", m.Topic(), m.Payload(), topic)
	}
	return m
}

// waitLost waits for the hub to close the connection.
func (c *hubClient) waitLost(t *testing.T, why string) {
	t.Helper()
	select {
	case <-c.lost:
	case <-time.After(hubWait):
		t.Fatalf("the hub did not close the connection: %s", why)
	}
}

func hubWaitToken(t *testing.T, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(hubWait) {
		t.Fatalf("%s: no answer within the hang guard", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// hubErrorOf decodes an error answer's body.
func hubErrorOf(t *testing.T, m mqtt.Message) hubErrorBody {
	t.Helper()
	var b hubErrorBody
	if err := json.Unmarshal(m.Payload(), &b); err != nil {
		t.Fatalf("error body %s: %v", m.Payload(), err)
	}
	if b.TrackingID == "" || b.Message == "" {
		t.Errorf("error body %s lacks trackingId or message", m.Payload())
	}
	if _, err := time.Parse(time.RFC3339, b.TimestampUTC); err != nil {
		t.Errorf("timestampUtc %q: %v", b.TimestampUTC, err)
	}
	return b
}

// hubJSON encodes v; maps come out with sorted keys, for comparisons.
func hubJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitState polls the State until cond holds for the device.
func (env *hubEnv) waitState(t *testing.T, id, what string, cond func(Device) bool) Device {
	t.Helper()
	deadline := time.Now().Add(hubWait)
	for {
		d := env.device(t, id)
		if cond(d) {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s: %s never happened (connected %t)", id, what, d.Connected)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Certificates for the X.509 tests.

func hubNewKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func hubNewCSR(t *testing.T, key crypto.Signer, cn string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// issueCert has the emulator's device PKI issue a certificate for id, as DPS
// would, and returns it ready for TLS with the issuing CA in the chain.
func (env *hubEnv) issueCert(t *testing.T, id string) (*tls.Certificate, *x509.Certificate) {
	t.Helper()
	key := hubNewKey(t)
	csr, err := pki.CheckCSR(hubNewCSR(t, key, id), id, env.e.keyPolicy)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := env.e.deviceCA.Issue(csr, pki.IssueOptions{DeviceID: id, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: chain[:2], PrivateKey: key, Leaf: leaf}, leaf
}

// hubMakeCert creates a certificate for cn signed by parent (self-signed when
// parent is nil); isCA makes it a CA.
func hubMakeCert(t *testing.T, cn string, isCA bool, parent *tls.Certificate) *tls.Certificate {
	t.Helper()
	key := hubNewKey(t)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if isCA {
		tmpl.IsCA, tmpl.KeyUsage, tmpl.ExtKeyUsage = true, x509.KeyUsageCertSign, nil
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.Leaf, parent.PrivateKey.(crypto.Signer)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func TestHubSASAuthentication(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "sas-1", "hub1")
	otherKey := make([]byte, 32)
	valid := hubSASToken(hub1Host, "sas-1", key, time.Now().Add(time.Hour))
	user := hubUser(hub1Host, "sas-1", hubAPIGA)
	for _, tt := range []struct {
		name string
		d    hubDial
		want byte
	}{
		{"valid token", hubDial{clientID: "sas-1", username: user, password: valid}, 0},
		{"model-id and no DeviceClientType", hubDial{clientID: "sas-1", username: hub1Host + "/sas-1/?api-version=" + hubAPIGA + "&model-id=dtmi%3Acom%3Aexample%3Bl", password: valid}, 0},
		{"host in upper case", hubDial{clientID: "sas-1", username: strings.ToUpper(hub1Host) + "/sas-1/?api-version=" + hubAPIGA, password: valid}, 0},
		{"signed with another key", hubDial{clientID: "sas-1", username: user, password: hubSASToken(hub1Host, "sas-1", otherKey, time.Now().Add(time.Hour))}, 5},
		{"signed for another hub", hubDial{clientID: "sas-1", username: user, password: hubSASToken(hub2Host, "sas-1", key, time.Now().Add(time.Hour))}, 5},
		{"signed for another device", hubDial{clientID: "sas-1", username: user, password: hubSASToken(hub1Host, "sas-2", key, time.Now().Add(time.Hour))}, 5},
		{"expired beyond the clock skew", hubDial{clientID: "sas-1", username: user, password: hubSASToken(hub1Host, "sas-1", key, time.Now().Add(-sas.ClockSkew-time.Minute))}, 5},
		{"a policy token (skn)", hubDial{clientID: "sas-1", username: user, password: sas.Sign(sas.HubResource(hub1Host, "sas-1"), key, "device", time.Now().Add(time.Hour))}, 5},
		{"password not a SAS token", hubDial{clientID: "sas-1", username: user, password: "hunter2"}, 4},
		{"no password and no certificate", hubDial{clientID: "sas-1", username: user}, 5},
		{"no user name", hubDial{clientID: "sas-1", password: valid}, 4},
		{"malformed user name", hubDial{clientID: "sas-1", username: "sas-1", password: valid}, 4},
		{"user name for another hub", hubDial{clientID: "sas-1", username: hubUser(hub2Host, "sas-1", hubAPIGA), password: valid}, 5},
		{"user name for another device", hubDial{clientID: "sas-1", username: hubUser(hub1Host, "sas-2", hubAPIGA), password: valid}, 5},
		{"device ID in another case", hubDial{clientID: "SAS-1", username: hubUser(hub1Host, "SAS-1", hubAPIGA), password: hubSASToken(hub1Host, "SAS-1", key, time.Now().Add(time.Hour))}, 5},
		{"unknown device", hubDial{clientID: "ghost", username: hubUser(hub1Host, "ghost", hubAPIGA), password: hubSASToken(hub1Host, "ghost", key, time.Now().Add(time.Hour))}, 5},
		{"module identity", hubDial{clientID: "sas-1/mod", username: hub1Host + "/sas-1/mod/?api-version=" + hubAPIGA, password: valid}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.d.clean = true
			c, code := env.connect(t, tt.d)
			if code != tt.want {
				t.Fatalf("CONNACK %d, want %d", code, tt.want)
			}
			if code == 0 {
				d := env.device(t, "sas-1")
				if !d.Connected || d.AuthMethod != "sas" || d.ConnectedSince == nil {
					t.Errorf("State after connecting: connected %t, auth %q, since %v", d.Connected, d.AuthMethod, d.ConnectedSince)
				}
				c.Disconnect(250)
				env.waitState(t, "sas-1", "disconnected", func(d Device) bool { return !d.Connected && d.ConnectedSince == nil })
			}
		})
	}

	t.Run("device assigned to another hub", func(t *testing.T) {
		elsewhereKey := env.addSASDevice(t, "elsewhere", "hub2")
		d := hubDial{clientID: "elsewhere", username: hubUser(hub1Host, "elsewhere", hubAPIGA), password: hubSASToken(hub1Host, "elsewhere", elsewhereKey, time.Now().Add(time.Hour)), clean: true}
		if _, code := env.connect(t, d); code != 5 {
			t.Fatalf("CONNACK %d from hub1 for a device DPS assigned to hub2, want 5", code)
		}
		d = hubDial{clientID: "elsewhere", username: hubUser(hub2Host, "elsewhere", hubAPIGA), password: hubSASToken(hub2Host, "elsewhere", elsewhereKey, time.Now().Add(time.Hour)), clean: true, hub: "hub2"}
		env.mustConnect(t, d)
	})

	if n := env.logs.FilterMessageSnippet("sig=").Len(); n > 0 {
		t.Errorf("%d log entries carry a SAS signature", n)
	}
	for _, entry := range env.logs.All() {
		for _, f := range entry.Context {
			if strings.Contains(f.String, "SharedAccessSignature") {
				t.Errorf("log entry %q field %s carries a SAS token", entry.Message, f.Key)
			}
		}
	}
}

// IoT Hub disconnects a device whose SAS token expires (401003); the device
// must reconnect with a new token.
func TestHubSASExpiryDisconnects(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "short-lived", "hub1")
	c := env.mustConnect(t, hubDial{
		clientID: "short-lived", username: hubUser(hub1Host, "short-lived", hubAPIGA), clean: true,
		password: hubSASToken(hub1Host, "short-lived", key, time.Now().Add(2*time.Second)),
	})
	if !env.device(t, "short-lived").Connected {
		t.Fatal("not connected")
	}
	c.waitLost(t, "the SAS token expired")
	env.waitState(t, "short-lived", "disconnected", func(d Device) bool { return !d.Connected })
	env.waitLog(t, "SAS token expired")
}

func TestHubX509Authentication(t *testing.T) {
	env := newHubEnv(t, nil)
	issued, issuedLeaf := env.issueCert(t, "x509-issued")
	env.e.State().AssignDevice(Device{DeviceID: "x509-issued", RegistrationID: "x509-issued", Hub: "hub1", Issued: true}, true)
	env.e.State().AssignDevice(Device{DeviceID: "not-issued", RegistrationID: "not-issued", Hub: "hub1"}, true)
	notIssued, _ := env.issueCert(t, "not-issued")
	forOther, _ := env.issueCert(t, "someone-else")

	selfSigned := hubMakeCert(t, "x509-thumb", false, nil)
	env.e.State().AssignDevice(Device{DeviceID: "x509-thumb", RegistrationID: "x509-thumb", Hub: "hub1", Thumbprints: []string{Thumbprint(selfSigned.Leaf)}}, true)
	unregistered := hubMakeCert(t, "x509-thumb", false, nil)

	groupCA := hubMakeCert(t, "Group CA", true, nil)
	env.e.State().AssignDevice(Device{DeviceID: "x509-group", RegistrationID: "x509-group", Hub: "hub1", CAs: []*x509.Certificate{groupCA.Leaf}}, true)
	groupLeaf := hubMakeCert(t, "x509-group", false, groupCA)
	groupWrongCN := hubMakeCert(t, "someone-else", false, groupCA)
	foreignCA := hubMakeCert(t, "Foreign CA", true, nil)
	foreignLeaf := hubMakeCert(t, "x509-group", false, foreignCA)

	for _, tt := range []struct {
		name string
		id   string
		cert *tls.Certificate
		want byte
	}{
		{"issued by the device PKI", "x509-issued", issued, 0},
		{"issued, but the device takes no issued certificates", "not-issued", notIssued, 5},
		{"issued for another device", "x509-issued", forOther, 5},
		{"registered thumbprint (self-signed)", "x509-thumb", selfSigned, 0},
		{"unregistered self-signed certificate", "x509-thumb", unregistered, 5},
		{"chains to the group CA", "x509-group", groupLeaf, 0},
		{"chains to the group CA, another CN", "x509-group", groupWrongCN, 5},
		{"chains to another CA", "x509-group", foreignLeaf, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, code := env.connect(t, hubDial{clientID: tt.id, username: hubUser(hub1Host, tt.id, hubAPIPreview), cert: tt.cert, clean: true})
			if code != tt.want {
				t.Fatalf("CONNACK %d, want %d", code, tt.want)
			}
			if code != 0 {
				return
			}
			d := env.device(t, tt.id)
			if !d.Connected || d.AuthMethod != "x509" || d.Certificate == nil || d.Certificate.SHA256 != Thumbprint(tt.cert.Leaf) {
				t.Errorf("State after connecting: connected %t, auth %q, certificate %+v", d.Connected, d.AuthMethod, d.Certificate)
			}
			c.Disconnect(250)
		})
	}

	t.Run("the issued certificate's serial is recorded", func(t *testing.T) {
		c := env.mustConnect(t, hubDial{clientID: "x509-issued", username: hubUser(hub1Host, "x509-issued", hubAPIPreview), cert: issued, clean: true})
		defer c.Disconnect(250)
		if got, want := env.device(t, "x509-issued").Certificate.Serial, NewCertificateInfo(issuedLeaf).Serial; got != want {
			t.Errorf("recorded serial %s, want %s", got, want)
		}
	})

	t.Run("revoked", func(t *testing.T) {
		if err := env.e.deviceCA.Revoke("x509-issued"); err != nil {
			t.Fatal(err)
		}
		if _, code := env.connect(t, hubDial{clientID: "x509-issued", username: hubUser(hub1Host, "x509-issued", hubAPIPreview), cert: issued, clean: true}); code != 5 {
			t.Fatalf("CONNACK %d with a revoked certificate, want 5", code)
		}
		renewed, _ := env.issueCert(t, "x509-issued")
		env.mustConnect(t, hubDial{clientID: "x509-issued", username: hubUser(hub1Host, "x509-issued", hubAPIPreview), cert: renewed, clean: true})
	})
}

// IoT Hub keeps one connection per device: a new one closes the old.
func TestHubSecondConnectionReplacesFirst(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "twice", "hub1")
	first := env.connectSAS(t, "twice", key, hubAPIGA)
	second := env.connectSAS(t, "twice", key, hubAPIGA)
	first.waitLost(t, "a second connection for the same device")
	// The closing first connection must not mark the device disconnected.
	env.waitLog(t, "device disconnected")
	if d := env.device(t, "twice"); !d.Connected {
		t.Fatal("State shows the device disconnected while its second connection is open")
	}
	second.mustSubscribe(t, hubFilterTwinResponses)
	second.publish(t, "$iothub/twin/GET/?$rid=1", 0, nil)
	second.expect(t, "$iothub/twin/res/200/?$rid=1")
	second.Disconnect(250)
	env.waitState(t, "twice", "disconnected", func(d Device) bool { return !d.Connected })
}

func TestHubSubscriptions(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "subs", "hub1")
	c := env.connectSAS(t, "subs", key, hubAPIPreview)
	got := c.subscribe(t,
		"$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#",
		"$iothub/credentials/res/#", "devices/subs/messages/devicebound/#",
		"devices/+/messages/devicebound/#", // the sixth
	)
	want := []byte{1, 1, 1, 1, 1, 0x80}
	if string(got) != string(want) {
		t.Fatalf("granted %v, want %v (QoS 1 for the first five, 0x80 for the sixth)", got, want)
	}
	if got := c.subscribe(t, "$iothub/twin/res/#"); got[0] != 1 {
		t.Errorf("re-subscribing a held filter at the limit: %#x, want granted", got[0])
	}
	hubWaitToken(t, c.Unsubscribe("devices/subs/messages/devicebound/#"), "unsubscribe")
	if got := c.subscribe(t, "devices/+/messages/devicebound/#"); got[0] != 1 {
		t.Errorf("subscribing after an unsubscribe freed a slot: %#x, want granted", got[0])
	}

	c2 := env.connectSAS(t, "subs", key, hubAPIPreview)
	c.waitLost(t, "replaced")
	tok := c2.SubscribeMultiple(map[string]byte{"$iothub/twin/res/#": 2, "$iothub/methods/POST/#": 0}, nil)
	hubWaitToken(t, tok, "subscribe")
	if res := tok.(*mqtt.SubscribeToken).Result(); res["$iothub/twin/res/#"] != 1 || res["$iothub/methods/POST/#"] != 0 {
		t.Errorf("granted %v: want min(requested, 1)", res)
	}
	for _, f := range []string{"devices/other/messages/devicebound/#", "#", "$iothub/#", "$dps/registrations/res/#", "$iothub/twin/res/+", "devices/subs/messages/events/#"} {
		if got := c2.subscribe(t, f); got[0] != 0x80 {
			t.Errorf("subscription to %q granted %#x, want 0x80", f, got[0])
		}
	}
}

// With CleanSession 0 the hub keeps a device's subscriptions across
// connections and says so in the CONNACK; CleanSession 1 discards them.
func TestHubCleanSession(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "sticky", "hub1")
	d := hubDial{clientID: "sticky", username: hubUser(hub1Host, "sticky", hubAPIGA)}
	connect := func(clean bool) *hubClient {
		d.clean, d.password = clean, hubSASToken(hub1Host, "sticky", key, time.Now().Add(time.Hour))
		return env.mustConnect(t, d)
	}
	c := connect(false)
	if c.present {
		t.Fatal("session present on the first connection")
	}
	c.mustSubscribe(t, hubFilterTwinResponses)
	c.Disconnect(250)
	env.waitState(t, "sticky", "disconnected", func(d Device) bool { return !d.Connected })

	c = connect(false)
	if !c.present {
		t.Fatal("CleanSession 0 reconnection: session present is false")
	}
	c.publish(t, "$iothub/twin/GET/?$rid=kept", 0, nil)
	c.expect(t, "$iothub/twin/res/200/?$rid=kept") // no new SUBSCRIBE needed
	c.Disconnect(250)
	env.waitState(t, "sticky", "disconnected", func(d Device) bool { return !d.Connected })

	c = connect(true)
	if c.present {
		t.Fatal("CleanSession 1: session present is true")
	}
	c.publish(t, "$iothub/twin/GET/?$rid=gone", 0, nil) // not subscribed any more: no answer
	c.mustSubscribe(t, hubFilterTwinResponses)
	c.publish(t, "$iothub/twin/GET/?$rid=after", 0, nil)
	c.expect(t, "$iothub/twin/res/200/?$rid=after")
	c.Disconnect(250)
	env.waitState(t, "sticky", "disconnected", func(d Device) bool { return !d.Connected })

	c = connect(false)
	if c.present {
		t.Fatal("CleanSession 1 must have discarded the stored session")
	}
}

func TestHubQoS2ClosesConnection(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "qos2", "hub1")
	c := env.connectSAS(t, "qos2", key, hubAPIGA)
	c.Publish("devices/qos2/messages/events/", 2, false, []byte("exactly once?"))
	c.waitLost(t, "a QoS 2 PUBLISH")
	var n int
	env.e.State().WithDevice("qos2", func(d *Device) { n = len(d.Telemetry) })
	if n != 0 {
		t.Errorf("%d telemetry messages stored from a QoS 2 PUBLISH", n)
	}
}

func TestHubTelemetry(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "tele", "hub1")
	c := env.connectSAS(t, "tele", key, hubAPIGA)
	c.publish(t, "devices/tele/messages/events/$.ct=application%2Fjson&$.ce=utf-8&unit=%C2%B0C&note=a%20b%2Bc&flag", 1, []byte(`{"t":21.5}`))
	c.publish(t, "devices/tele/messages/events/", 0, []byte("plain"))
	hubWaitToken(t, c.Publish("devices/tele/messages/events/", 1, true, []byte("retained")), "publish retained")

	var msgs []TelemetryMessage
	env.e.State().WithDevice("tele", func(d *Device) { msgs = append(msgs, d.Telemetry...) })
	if len(msgs) != 3 {
		t.Fatalf("stored %d messages, want 3: %+v", len(msgs), msgs)
	}
	wantProps := map[string]string{"$.ct": "application/json", "$.ce": "utf-8", "unit": "°C", "note": "a b+c", "flag": ""}
	if got := msgs[0]; got.Body != `{"t":21.5}` || hubJSON(t, got.Properties) != hubJSON(t, wantProps) || got.At.IsZero() {
		t.Errorf("first message stored as %+v, want properties %v", got, wantProps)
	}
	if got := msgs[1]; got.Body != "plain" || len(got.Properties) != 0 {
		t.Errorf("second message stored as %+v", got)
	}
	if got := msgs[2]; got.Properties["mqtt-retain"] != "true" {
		t.Errorf("a retained message's properties are %v, want mqtt-retain=true", got.Properties)
	}

	t.Run("telemetry for another device closes the connection", func(t *testing.T) {
		c := env.connectSAS(t, "tele", key, hubAPIGA)
		c.Publish("devices/other/messages/events/", 1, false, []byte("spoofed"))
		c.waitLost(t, "telemetry for another device")
	})
	t.Run("an unsupported topic closes the connection", func(t *testing.T) {
		c := env.connectSAS(t, "tele", key, hubAPIGA)
		c.Publish("some/topic", 0, false, []byte("?"))
		c.waitLost(t, "an unsupported topic")
	})
	t.Run("the will becomes telemetry", func(t *testing.T) {
		d := hubDial{
			clientID: "tele", username: hubUser(hub1Host, "tele", hubAPIGA), clean: true,
			password: hubSASToken(hub1Host, "tele", key, time.Now().Add(time.Hour)),
			will:     &mqttsrv.Message{Topic: "devices/tele/messages/events/reason=gone", Payload: []byte("bye"), QoS: 1},
		}
		c := env.mustConnect(t, d)
		env.hub1().Disconnect("tele", nil)
		c.waitLost(t, "Disconnect")
		env.waitState(t, "tele", "the will stored", func(d Device) bool {
			return len(d.Telemetry) > 0 && d.Telemetry[len(d.Telemetry)-1].Body == "bye"
		})
		var last TelemetryMessage
		env.e.State().WithDevice("tele", func(d *Device) { last = d.Telemetry[len(d.Telemetry)-1] })
		if last.Properties["iothub-MessageType"] != "Will" || last.Properties["reason"] != "gone" {
			t.Errorf("will stored as %+v", last)
		}
	})
}

func TestHubTelemetryKeepsTheNewest(t *testing.T) {
	env := newHubEnv(t, nil)
	h := env.hub1()
	env.addSASDevice(t, "chatty", "hub1")
	for i := range maxTelemetryKept + 10 {
		h.storeTelemetry("chatty", TelemetryMessage{Body: strings.Repeat("x", i%3) + string(rune('a'+i%26))})
	}
	var n int
	var last string
	env.e.State().WithDevice("chatty", func(d *Device) { n, last = len(d.Telemetry), d.Telemetry[len(d.Telemetry)-1].Body })
	if n != maxTelemetryKept {
		t.Errorf("kept %d messages, want %d", n, maxTelemetryKept)
	}
	i := maxTelemetryKept + 9
	if want := strings.Repeat("x", i%3) + string(rune('a'+i%26)); last != want {
		t.Errorf("newest message %q, want %q", last, want)
	}
}
