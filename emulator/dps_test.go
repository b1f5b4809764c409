package emulator

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// dpsTimestamp is the service's format: seven fractional digits, UTC.
var dpsTimestamp = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$`)

func TestDPSSymmetricKeyIndividualWithCSR(t *testing.T) {
	const regID = "sym-device-1"
	key := dpsKey("individual")
	e, ep := startDPSEmulator(t, func(c *Config) {
		c.Enrollments = []Enrollment{dpsSymmetricEnrollment(regID, key)}
	})
	cl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key)}.mustConnect(t, ep)
	csrKey, csr := dpsCSR(t, regID)

	first := cl.await(cl.register(registerBody(regID, csr, `{"model":"gw-<1>&2"}`)))
	if first.status != 202 || first.retryAfter != 3 {
		t.Fatalf("register answered %d retry-after=%d, want 202 retry-after=3", first.status, first.retryAfter)
	}
	if first.qos != 1 {
		t.Errorf("answer published at QoS %d, want the granted QoS 1", first.qos)
	}
	accepted := first.status200(t)
	if accepted.Status != "assigning" || !regexp.MustCompile(`^4\.[0-9a-f]{16}\.[0-9a-f-]{36}$`).MatchString(accepted.OperationID) {
		t.Errorf("202 body %s: want status assigning and an operation ID like the service's", first.body)
	}

	final, st := cl.finish(accepted.OperationID)
	if final.retryAfter != 0 {
		t.Errorf("final answer carries retry-after=%d", final.retryAfter)
	}
	rs := st.RegistrationState
	if st.Status != "assigned" || rs == nil || rs.Status != "assigned" || rs.Substatus != "initialAssignment" {
		t.Fatalf("final answer %s", final.body)
	}
	if rs.RegistrationID != regID || rs.DeviceID != regID || !strings.HasPrefix(rs.AssignedHub, "hub") {
		t.Errorf("registrationState %+v", rs)
	}
	for name, ts := range map[string]string{"createdDateTimeUtc": rs.CreatedDateTimeUTC, "lastUpdatedDateTimeUtc": rs.LastUpdatedDateTimeUTC} {
		if !dpsTimestamp.MatchString(ts) {
			t.Errorf("%s = %q, want the service's 2020-04-10T03:11:13.0276997Z form", name, ts)
		}
	}
	if etag, err := base64.StdEncoding.DecodeString(rs.ETag); err != nil || !bytes.HasPrefix(etag, []byte(`"`)) {
		t.Errorf("etag %q is not base64 of a quoted version", rs.ETag)
	}
	if string(rs.Payload) != `{"model":"gw-<1>&2"}` {
		t.Errorf("payload echoed as %s", rs.Payload)
	}
	if !bytes.Contains(final.body, []byte(`"gw-<1>&2"`)) {
		t.Errorf("payload HTML-escaped in %s; the service does not escape", final.body)
	}
	if rs.SymmetricKey != nil || rs.X509 != nil {
		t.Errorf("an individual symmetric-key registration carries an attestation block: %s", final.body)
	}
	verifyIssuedChain(t, ep, dpsChain(t, rs), csrKey, regID)

	dev, ok := e.State().Device(regID)
	if !ok || !dev.Issued || dev.Certificate == nil || len(dev.SymmetricKeys) != 1 || rs.AssignedHub != dpsHubHost(t, e, dev.Hub) {
		t.Errorf("device as the hub will see it: %+v", dev)
	}
	regs := e.State().Registrations()
	if len(regs) != 1 {
		t.Fatalf("registrations = %+v, want the one", regs)
	}
	last := regs[0]
	if last.Status != "assigned" || last.OperationID != st.OperationID || last.IssuedSerial == nil ||
		*last.IssuedSerial != dev.Certificate.Serial || last.AssignedHub == nil || *last.AssignedHub != rs.AssignedHub || last.CompletedAt == nil {
		t.Errorf("registration record %+v", last)
	}
}

func dpsHubHost(t testing.TB, e *Emulator, name string) string {
	t.Helper()
	h, ok := e.cfg.hub(name)
	if !ok {
		t.Fatalf("no hub %q", name)
	}
	return h.Host
}

// The C# SDK publishes an empty body unless there is a custom payload; old
// C SDKs always did.
func TestDPSRegisterWithEmptyBody(t *testing.T) {
	const regID = "empty-body"
	key := dpsKey("empty")
	_, ep := startDPSEmulator(t, func(c *Config) { c.Enrollments = []Enrollment{dpsSymmetricEnrollment(regID, key)} })
	cl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key), apiVersion: "2019-03-31"}.mustConnect(t, ep)
	_, st := cl.provision(nil)
	if st.Status != "assigned" || st.RegistrationState.IssuedCertificateChain != nil {
		t.Errorf("answer %+v", st)
	}
}

func TestDPSGroupSymmetricKey(t *testing.T) {
	groupKey := dpsKey("group")
	e, ep := startDPSEmulator(t, func(c *Config) {
		c.Enrollments = []Enrollment{dpsGroupEnrollment("other", dpsKey("other")), dpsGroupEnrollment("fleet", groupKey)}
	})
	const regID = "Gateway-0042"
	cl := dpsDial{regID: regID, password: dpsGroupSAS(t, ep.IDScope, regID, groupKey)}.mustConnect(t, ep)
	csrKey, csr := dpsCSR(t, regID)
	final, st := cl.provision(registerBody(regID, csr, ""))
	rs := st.RegistrationState
	if rs.DeviceID != regID || rs.SymmetricKey == nil || rs.SymmetricKey.EnrollmentGroupID != "fleet" {
		t.Errorf("group registration answered %s", final.body)
	}
	verifyIssuedChain(t, ep, dpsChain(t, rs), csrKey, regID)
	dev, _ := e.State().Device(regID)
	gk, _ := sas.DecodeKey(groupKey)
	if len(dev.SymmetricKeys) != 1 || !bytes.Equal(dev.SymmetricKeys[0], sas.DeriveDeviceKey(gk, regID)) {
		t.Error("the hub does not get the derived device key")
	}
	if dev.EnrollmentKey != "group:fleet" {
		t.Errorf("device enrolled through %q", dev.EnrollmentKey)
	}
}

func TestDPSX509Individual(t *testing.T) {
	const regID = "x509-device"
	cert, key := dpsLeaf(t, regID, nil, time.Now().Add(time.Hour))
	_, ep := startDPSEmulator(t, func(c *Config) {
		c.Enrollments = []Enrollment{{RegistrationID: regID, Attestation: Attestation{Type: AttestX509, CertificatePEM: dpsPEM(cert)}}}
	})
	cl := dpsDial{regID: regID, certs: []tls.Certificate{dpsTLSCert(key, cert)}}.mustConnect(t, ep)
	csrKey, csr := dpsCSR(t, regID)
	final, st := cl.provision(registerBody(regID, csr, ""))
	if st.RegistrationState.X509 == nil || st.RegistrationState.X509.EnrollmentGroupID != "" || !bytes.Contains(final.body, []byte(`"x509":{}`)) {
		t.Errorf("individual X.509 answer %s, want \"x509\":{}", final.body)
	}
	verifyIssuedChain(t, ep, dpsChain(t, st.RegistrationState), csrKey, regID)

	// The same name on another key is not the enrolled certificate.
	impostor, impostorKey := dpsLeaf(t, regID, nil, time.Now().Add(time.Hour))
	if _, err := (dpsDial{regID: regID, certs: []tls.Certificate{dpsTLSCert(impostorKey, impostor)}}).connect(t, ep); !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Errorf("impostor certificate: %v, want CONNACK 5", err)
	}
}

func TestDPSX509Group(t *testing.T) {
	root := newDPSTestCA(t, "fleet root", nil)
	inter := newDPSTestCA(t, "fleet intermediate", root)
	e, ep := startDPSEmulator(t, func(c *Config) {
		c.Enrollments = []Enrollment{{GroupID: "x509-fleet", Attestation: Attestation{Type: AttestX509, CAPEM: dpsPEM(root.cert)}}}
	})
	const regID = "x509-member-7"
	leaf, key := dpsLeaf(t, regID, inter, time.Now().Add(time.Hour))
	cl := dpsDial{regID: regID, certs: []tls.Certificate{dpsTLSCert(key, leaf, inter.cert)}}.mustConnect(t, ep)
	final, st := cl.provision(registerBody(regID, nil, ""))
	if x := st.RegistrationState.X509; x == nil || x.EnrollmentGroupID != "x509-fleet" {
		t.Errorf("group X.509 answer %s", final.body)
	}
	if dev, _ := e.State().Device(regID); len(dev.CAs) != 1 || !dev.CAs[0].Equal(root.cert) {
		t.Errorf("the hub does not get the group's CA: %+v", dev.CAs)
	}

	// A member certificate for another name, and one without its
	// intermediate, do not get in.
	other, otherKey := dpsLeaf(t, "someone-else", inter, time.Now().Add(time.Hour))
	if _, err := (dpsDial{regID: regID, certs: []tls.Certificate{dpsTLSCert(otherKey, other, inter.cert)}}).connect(t, ep); !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Errorf("certificate CN != registration ID: %v, want CONNACK 5", err)
	}
	if _, err := (dpsDial{regID: regID, certs: []tls.Certificate{dpsTLSCert(key, leaf)}}).connect(t, ep); !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Errorf("chain without its intermediate: %v, want CONNACK 5", err)
	}
}

func TestDPSConnectRefused(t *testing.T) {
	const regID = "refused-device"
	key := dpsKey("refused")
	_, ep := startDPSEmulator(t, func(c *Config) {
		c.Enrollments = []Enrollment{dpsSymmetricEnrollment(regID, key), dpsGroupEnrollment("fleet", dpsKey("fleet"))}
	})
	k, _ := sas.DecodeKey(key)
	good := dpsSAS(t, ep.IDScope, regID, key)
	expired := sas.Sign(sas.DPSResource(ep.IDScope, regID), k, "registration", time.Now().Add(-sas.ClockSkew-time.Minute))
	for _, tc := range []struct {
		name string
		dial dpsDial
	}{
		{"wrong key", dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, dpsKey("wrong"))}},
		{"expired token", dpsDial{regID: regID, password: expired}},
		{"token for another registration", dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, "someone", key)}},
		{"unknown registration", dpsDial{regID: "nobody", password: dpsSAS(t, ep.IDScope, "nobody", key)}},
		{"other key name", dpsDial{regID: regID, password: strings.Replace(good, "skn=registration", "skn=iothubowner", 1)}},
		{"not a token", dpsDial{regID: regID, password: "hunter2"}},
		{"no credential", dpsDial{regID: regID}},
		{"wrong ID scope", dpsDial{regID: regID, password: good, username: "0ne99999999/registrations/" + regID + "/api-version=2019-03-31"}},
		{"user name for another registration", dpsDial{regID: regID, password: good, username: ep.IDScope + "/registrations/other/api-version=2019-03-31"}},
		{"client ID differs", dpsDial{regID: regID, clientID: "other", password: good}},
		{"no api-version", dpsDial{regID: regID, password: good, username: ep.IDScope + "/registrations/" + regID + "/ClientVersion=x"}},
		{"bad api-version", dpsDial{regID: regID, password: good, apiVersion: "latest"}},
		{"hub-style user name", dpsDial{regID: regID, password: good, username: "hub1/" + regID + "/?api-version=2021-04-12"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.dial.connect(t, ep); !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
				t.Errorf("CONNECT: %v, want CONNACK 5 (not authorized)", err)
			}
		})
	}
	t.Run("invalid registration ID", func(t *testing.T) {
		const bad = "-starts-with-a-dash"
		dl := dpsDial{regID: bad, password: dpsSAS(t, ep.IDScope, bad, key)}
		if _, err := dl.connect(t, ep); !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
			t.Errorf("CONNECT: %v, want CONNACK 5", err)
		}
	})
	// The positive control: the same set-up with good credentials connects.
	if _, err := (dpsDial{regID: regID, password: good}).connect(t, ep); err != nil {
		t.Fatalf("good credentials refused: %v", err)
	}
}

func TestDPSDisabledEnrollment(t *testing.T) {
	const regID = "disabled-device"
	key := dpsKey("disabled")
	e, ep := startDPSEmulator(t, func(c *Config) {
		enr := dpsSymmetricEnrollment(regID, key)
		enr.Enabled = ptr(false)
		c.Enrollments = []Enrollment{enr}
	})
	cl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key)}.mustConnect(t, ep)
	_, csr := dpsCSR(t, regID)
	final, st := cl.provision(registerBody(regID, csr, ""))
	rs := st.RegistrationState
	if st.Status != "disabled" || rs.Status != "disabled" || rs.ErrorCode != dpsCodeDisabled || rs.ErrorMessage == "" ||
		rs.AssignedHub != "" || rs.IssuedCertificateChain != nil {
		t.Errorf("disabled enrollment answered %s", final.body)
	}
	if _, ok := e.State().Device(regID); ok {
		t.Error("a device was created for a disabled enrollment")
	}
	if regs := e.State().Registrations(); len(regs) != 1 || regs[0].Status != "disabled" || regs[0].ErrorCode == nil {
		t.Errorf("registrations %+v", regs)
	}
}

func TestDPSRegisterRefused(t *testing.T) {
	const regID = "csr-device"
	key := dpsKey("csr")
	e, ep := startDPSEmulator(t, func(c *Config) {
		noIssue := dpsSymmetricEnrollment("no-issue", key)
		noIssue.IssueCertificates = ptr(false)
		c.Enrollments = []Enrollment{dpsSymmetricEnrollment(regID, key), noIssue}
	})
	_, goodCSR := dpsCSR(t, regID)
	_, wrongCN := dpsCSR(t, "someone-else")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCSR := dpsCSRFor(t, rsaKey, regID)
	tampered := bytes.Clone(goodCSR)
	tampered[len(tampered)-5] ^= 0xff // inside the signature
	for _, tc := range []struct {
		name       string
		regID      string
		apiVersion string
		body       []byte
		code       int
		message    string
	}{
		{"CSR for another name", regID, "", registerBody(regID, wrongCN, ""), dpsCodeInvalidField, "CN must be the registration ID"},
		{"RSA key", regID, "", registerBody(regID, rsaCSR, ""), dpsCodeInvalidField, "key type"},
		{"CSR not base64", regID, "", []byte(`{"registrationId":"` + regID + `","csr":"-----BEGIN CERTIFICATE REQUEST-----"}`), dpsCodeInvalidField, "not base64"},
		{"CSR not PKCS#10", regID, "", []byte(`{"registrationId":"` + regID + `","csr":"aGVsbG8="}`), dpsCodeCSRInvalid, "cannot be decoded"},
		{"CSR signature broken", regID, "", registerBody(regID, tampered, ""), dpsCodeCSRInvalid, ""},
		{"CSR too large", regID, "", []byte(`{"csr":"` + strings.Repeat("A", 9000) + `"}`), dpsCodeInvalidField, "too large"},
		{"CSR with an old api-version", regID, "2021-10-01", registerBody(regID, goodCSR, ""), dpsCodeInvalidField, "api-version 2021-10-01"},
		{"CSR to an enrollment that does not issue", "no-issue", "", registerBody("no-issue", dpsCSRFor(t, rsaKey, "no-issue"), ""), dpsCodeCSRNotConfigured,
			"Device sent CSR but the enrollment is not configured to issue certificates"},
		{"registrationId of someone else", regID, "", registerBody("someone-else", nil, ""), dpsCodeInvalidField, "does not match"},
		{"body not JSON", regID, "", []byte(`{"registrationId":`), dpsCodeMalformedJSON, "not valid JSON"},
		{"registrationId not a string", regID, "", []byte(`{"registrationId":42}`), dpsCodeInvalidField, "registrationId"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dpsDial{regID: tc.regID, password: dpsSAS(t, ep.IDScope, tc.regID, key), apiVersion: tc.apiVersion}.mustConnect(t, ep)
			r := cl.await(cl.register(tc.body))
			eb := r.errorBody(t)
			if r.status != tc.code/1000 || eb.ErrorCode != tc.code || !strings.Contains(eb.Message, tc.message) {
				t.Errorf("answer %d %s, want %d with errorCode %d mentioning %q", r.status, r.body, tc.code/1000, tc.code, tc.message)
			}
			if eb.TrackingID == "" || !dpsTimestamp.MatchString(eb.TimestampUTC) {
				t.Errorf("error body %s lacks trackingId or timestampUtc", r.body)
			}
			if r.retryAfter != 0 {
				t.Errorf("a permanent error carries retry-after=%d", r.retryAfter)
			}
		})
	}
	if n := len(e.State().Devices()); n != 0 {
		t.Errorf("%d devices created by refused registrations", n)
	}
	for _, r := range e.State().Registrations() {
		if r.Status != "failed" || r.ErrorCode == nil {
			t.Errorf("refused registration recorded as %+v", r)
		}
	}
}

// Deleting the enrollment after the device connected leaves nothing to
// register against.
func TestDPSEnrollmentDeletedAfterConnect(t *testing.T) {
	const regID = "short-lived"
	key := dpsKey("deleted")
	e, ep := startDPSEmulator(t, func(c *Config) { c.Enrollments = []Enrollment{dpsSymmetricEnrollment(regID, key)} })
	cl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key)}.mustConnect(t, ep)
	e.State().DeleteEnrollment("registration:" + regID)
	r := cl.await(cl.register(registerBody(regID, nil, "")))
	if eb := r.errorBody(t); r.status != 404 || eb.ErrorCode != dpsCodeEnrollmentNotFound {
		t.Errorf("answer %d %s, want 404 with %d", r.status, r.body, dpsCodeEnrollmentNotFound)
	}
}

func TestDPSPolling(t *testing.T) {
	const regID = "poller"
	key := dpsKey("poller")
	e, ep := startDPSEmulator(t, func(c *Config) {
		c.Enrollments = []Enrollment{dpsSymmetricEnrollment(regID, key), dpsSymmetricEnrollment("other", key)}
	})
	e.dps.assignDelay = time.Hour // stays "assigning" for the whole test
	cl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key)}.mustConnect(t, ep)
	op := cl.await(cl.register(nil)).status200(t).OperationID

	r := cl.await(cl.poll(op))
	st := r.status200(t)
	if r.status != 202 || r.retryAfter != 3 || st.Status != "assigning" || st.OperationID != op ||
		st.RegistrationState == nil || st.RegistrationState.RegistrationID != regID || st.RegistrationState.Status != "assigning" {
		t.Errorf("poll while assigning: %d %s", r.status, r.body)
	}
	if r := cl.await(cl.poll("4.0000000000000000.00000000-0000-4000-8000-000000000000")); r.status != 404 || r.errorBody(t).ErrorCode != dpsCodeOperationNotFound {
		t.Errorf("unknown operation: %d %s, want 404", r.status, r.body)
	}
	// Another device's operation is not this device's to see.
	other := dpsDial{regID: "other", password: dpsSAS(t, ep.IDScope, "other", key)}.mustConnect(t, ep)
	if r := other.await(other.poll(op)); r.status != 404 {
		t.Errorf("another device polled this device's operation: %d %s", r.status, r.body)
	}

	// Five polls per ten seconds: two were made, three more are allowed.
	for i := range 3 {
		if r := cl.await(cl.poll(op)); r.status != 202 {
			t.Fatalf("poll %d: %d %s", i+3, r.status, r.body)
		}
	}
	r = cl.await(cl.poll(op))
	if eb := r.errorBody(t); r.status != 429 || eb.ErrorCode != dpsCodeThrottled || r.retryAfter < 1 || r.retryAfter > 10 {
		t.Errorf("sixth poll in 10 s: %d retry-after=%d %s, want 429 with retry-after", r.status, r.retryAfter, r.body)
	}
}

func TestDPSSubscriptions(t *testing.T) {
	const regID = "subscriber"
	key := dpsKey("sub")
	e, ep := startDPSEmulator(t, func(c *Config) { c.Enrollments = []Enrollment{dpsSymmetricEnrollment(regID, key)} })
	dl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key)}

	cl, err := dl.connect(t, ep)
	if err != nil {
		t.Fatal(err)
	}
	// Publishing before subscribing: the service never answers.
	cl.register(nil)
	if !cl.silent(300 * time.Millisecond) {
		t.Error("DPS answered a device that had not subscribed")
	}
	if regs := e.State().Registrations(); len(regs) != 0 {
		t.Errorf("an unanswerable request was carried out: %+v", regs)
	}
	if got := cl.subscribe("$dps/registrations/res/202/#", 1); got != 0x80 {
		t.Errorf("other filter granted %#x, want 0x80", got)
	}
	if got := cl.subscribe(dpsResponseFilter, 2); got != 1 {
		t.Errorf("QoS 2 subscription granted %d, want 1", got)
	}
	if r := cl.await(cl.register(nil)); r.status != 202 || r.qos != 1 {
		t.Errorf("after subscribing: %d at QoS %d", r.status, r.qos)
	}

	// QoS 0 subscribers get QoS 0 answers.
	cl0 := dl.mustConnectQoS(t, ep, 0)
	if r := cl0.await(cl0.register(nil)); r.qos != 0 {
		t.Errorf("answer at QoS %d to a QoS 0 subscription", r.qos)
	}
}

func (dl dpsDial) mustConnectQoS(t testing.TB, ep *Endpoints, qos byte) *dpsClient {
	t.Helper()
	cl, err := dl.connect(t, ep)
	if err != nil {
		t.Fatal(err)
	}
	cl.subscribe(dpsResponseFilter, qos)
	return cl
}

// A second connection for the same registration ID replaces the first.
func TestDPSOneConnectionPerRegistration(t *testing.T) {
	const regID = "twice"
	key := dpsKey("twice")
	_, ep := startDPSEmulator(t, func(c *Config) { c.Enrollments = []Enrollment{dpsSymmetricEnrollment(regID, key)} })
	dl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key)}
	first := dl.mustConnect(t, ep)
	second := dl.mustConnect(t, ep)
	select {
	case <-first.lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the first connection was not closed")
	}
	if r := second.await(second.register(nil)); r.status != 202 {
		t.Errorf("second connection: %d", r.status)
	}
}

func TestDPSUnknownTopicClosesConnection(t *testing.T) {
	const regID = "lost"
	key := dpsKey("lost")
	_, ep := startDPSEmulator(t, func(c *Config) { c.Enrollments = []Enrollment{dpsSymmetricEnrollment(regID, key)} })
	cl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key)}.mustConnect(t, ep)
	cl.c.Publish("devices/lost/messages/events/", 1, false, "hello")
	select {
	case <-cl.lost:
	case <-time.After(5 * time.Second):
		t.Fatal("a publish to a hub topic did not close the DPS connection")
	}
}

// Closing the emulator ends everything DPS started: session workers, an
// assignment still waiting, an answer held back by a delay fault.
func TestDPSCloseEndsGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const regID = "closer"
	key := dpsKey("closer")
	cfg := Config{
		DPS: ListenerConfig{Listen: "127.0.0.1:0"}, Hubs: dpsTestHubs()[:1], Admin: ListenerConfig{Listen: "127.0.0.1:0"},
		Enrollments: []Enrollment{dpsSymmetricEnrollment(regID, key)},
	}
	e, err := New(cfg, t.TempDir(), Options{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	e.dps.assignDelay = time.Hour
	ep, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	cl := dpsDial{regID: regID, password: dpsSAS(t, ep.IDScope, regID, key)}.mustConnect(t, ep)
	if r := cl.await(cl.register(nil)); r.status != 202 {
		t.Fatalf("register: %d", r.status)
	}
	if _, err := e.Faults().Add(Fault{Endpoint: EndpointDPS, Operation: OpPoll, Action: ActionDelay, Delay: Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	cl.poll("pending")
	time.Sleep(50 * time.Millisecond) // the delayed answer is waiting now
	done := make(chan error, 1)
	go func() { done <- e.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return: something DPS started is still running")
	}
	// The client's goroutines end with its connection; goleak waits for
	// them a little.
	cl.c.Disconnect(0)
}
