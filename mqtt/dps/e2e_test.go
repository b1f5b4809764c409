package dps_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dpsagent/dpsagent/emulator"
	"github.com/dpsagent/dpsagent/mqtt/dps"
	"github.com/dpsagent/dpsagent/mqtt/sas"
	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/softkey"
)

// These tests register against the emulator's DPS over real TLS on
// loopback, as the agent will against Azure.

func startEmulator(t *testing.T, enrollments ...emulator.Enrollment) (*emulator.Emulator, *emulator.Endpoints) {
	t.Helper()
	cfg := emulator.Config{
		DPS:         emulator.ListenerConfig{Listen: "127.0.0.1:0"},
		Hubs:        []emulator.HubConfig{{Name: "hub1", Host: "127.0.0.1", Listen: "127.0.0.1:0"}},
		Admin:       emulator.ListenerConfig{Listen: "127.0.0.1:0"},
		Enrollments: enrollments,
	}
	e, err := emulator.New(cfg, t.TempDir(), emulator.Options{Logger: zaptest.NewLogger(t).Named("iotemu")})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, ep
}

func client(t *testing.T, ep *emulator.Endpoints, regID string, auth dps.Auth, mutate ...func(*dps.Options)) *dps.Client {
	t.Helper()
	o := dps.Options{
		Endpoint:        ep.DPS,
		IDScope:         ep.IDScope,
		RegistrationID:  regID,
		Auth:            auth,
		TrustBundleFile: ep.TLSCAFile,
		ClientVersion:   "dpsagent/e2e",
		Logger:          zaptest.NewLogger(t),
		Timeout:         time.Minute,
	}
	for _, m := range mutate {
		m(&o)
	}
	c, err := dps.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func symmetricEnrollment(regID string, key []byte) emulator.Enrollment {
	return emulator.Enrollment{
		RegistrationID: regID,
		Attestation:    emulator.Attestation{Type: emulator.AttestSymmetricKey, PrimaryKey: sas.EncodeKey(key)},
	}
}

func newKey(t *testing.T, alg keys.Algorithm) keys.Key {
	t.Helper()
	k, err := (&softkey.Backend{}).CreateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func csrFor(t *testing.T, k keys.Key, regID string) []byte {
	t.Helper()
	der, err := keys.NewCSR(k, regID)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// checkIssuedChain finds the leaf by the key, as the agent will, and checks
// that it verifies to the emulator's device root for client authentication.
func checkIssuedChain(t *testing.T, chain [][]byte, key keys.Key, regID, rootFile string) {
	t.Helper()
	if len(chain) == 0 {
		t.Fatal("no certificate was issued")
	}
	var leaf *x509.Certificate
	intermediates := x509.NewCertPool()
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("issuedCertificateChain[%d]: %v", i, err)
		}
		if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(c.PublicKey) {
			leaf = c
			continue
		}
		intermediates.AddCert(c)
	}
	if leaf == nil {
		t.Fatal("no certificate in the chain is for the CSR's key")
	}
	if leaf.Subject.CommonName != regID {
		t.Errorf("leaf CN %q, want %q", leaf.Subject.CommonName, regID)
	}
	rootPEM, err := os.ReadFile(rootFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatal("no root in the device root file")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued leaf does not verify to the device root: %v", err)
	}
}

func TestE2ESymmetricKeyWithCSR(t *testing.T) {
	t.Parallel()
	devKey := []byte("e2e-individual-device-key-32byte")
	_, ep := startEmulator(t, symmetricEnrollment("e2e-sym", devKey))
	key := newKey(t, keys.ECDSAP384)
	res, err := client(t, ep, "e2e-sym", dps.SymmetricKey(devKey)).
		Register(context.Background(), csrFor(t, key, "e2e-sym"), json.RawMessage(`{"site":"lab"}`))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "assigned" || res.AssignedHub != "127.0.0.1" || res.DeviceID != "e2e-sym" || res.OperationID == "" || res.CreatedAt.IsZero() {
		t.Errorf("result %+v", res)
	}
	checkIssuedChain(t, res.IssuedCertificateChain, key, "e2e-sym", ep.DeviceRootFile)
}

func TestE2EGroupKeyDerivation(t *testing.T) {
	t.Parallel()
	groupKey := []byte("e2e-enrollment-group-key-32bytes")
	_, ep := startEmulator(t, emulator.Enrollment{
		GroupID:     "e2e-group",
		Attestation: emulator.Attestation{Type: emulator.AttestSymmetricKey, PrimaryKey: sas.EncodeKey(groupKey)},
	})
	key := newKey(t, keys.ECDSAP256)
	res, err := client(t, ep, "e2e-group-member-7", dps.GroupKey(groupKey)).
		Register(context.Background(), csrFor(t, key, "e2e-group-member-7"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.DeviceID != "e2e-group-member-7" {
		t.Errorf("device ID %q", res.DeviceID)
	}
	checkIssuedChain(t, res.IssuedCertificateChain, key, "e2e-group-member-7", ep.DeviceRootFile)
}

// birthCA is a manufacturer's CA with an intermediate, for X.509 groups.
type birthCA struct {
	root, inter       *x509.Certificate
	rootKey, interKey keys.Key
}

func newBirthCA(t *testing.T) *birthCA {
	t.Helper()
	ca := &birthCA{rootKey: newKey(t, keys.ECDSAP256), interKey: newKey(t, keys.ECDSAP256)}
	ca.root = signCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Birth Root"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign},
		nil, ca.rootKey.Public(), ca.rootKey)
	ca.inter = signCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Birth Intermediate"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign},
		ca.root, ca.interKey.Public(), ca.rootKey)
	return ca
}

func signCert(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber, _ = rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (ca *birthCA) device(t *testing.T, key keys.Key, cn string) [][]byte {
	t.Helper()
	leaf := signCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca.inter, key.Public(), ca.interKey)
	return [][]byte{leaf.Raw, ca.inter.Raw}
}

func TestE2EX509Group(t *testing.T) {
	t.Parallel()
	ca := newBirthCA(t)
	_, ep := startEmulator(t, emulator.Enrollment{
		GroupID: "e2e-x509",
		Attestation: emulator.Attestation{Type: emulator.AttestX509,
			CAPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw}))},
	})
	birthKey := newKey(t, keys.ECDSAP256)
	chain := ca.device(t, birthKey, "e2e-x509-dev")
	newKey := newKey(t, keys.ECDSAP384)
	res, err := client(t, ep, "e2e-x509-dev", dps.X509(birthKey, chain)).
		Register(context.Background(), csrFor(t, newKey, "e2e-x509-dev"), nil)
	if err != nil {
		t.Fatal(err)
	}
	checkIssuedChain(t, res.IssuedCertificateChain, newKey, "e2e-x509-dev", ep.DeviceRootFile)

	// Without the intermediate, the chain does not reach the enrolled root.
	_, err = client(t, ep, "e2e-x509-dev", dps.X509(birthKey, chain[:1])).Register(context.Background(), nil, nil)
	e := asDPSError(t, err)
	if e.Kind != dps.KindAuth || e.Retryable() || !strings.Contains(e.Hint(), "intermediates") {
		t.Errorf("leaf alone: %v; want a non-retryable auth error with a hint about intermediates", err)
	}
}

func asDPSError(t *testing.T, err error) *dps.Error {
	t.Helper()
	var e *dps.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *dps.Error", err, err)
	}
	return e
}

func TestE2EWrongKey(t *testing.T) {
	t.Parallel()
	right, wrong := []byte("e2e-the-right-device-key-32bytes"), []byte("e2e-the-wrong-device-key-32bytes")
	_, ep := startEmulator(t, symmetricEnrollment("e2e-wrong", right))
	_, err := client(t, ep, "e2e-wrong", dps.SymmetricKey(wrong)).Register(context.Background(), nil, nil)
	e := asDPSError(t, err)
	if e.Kind != dps.KindAuth || e.Retryable() || e.Hint() == "" {
		t.Errorf("error %v: kind %v, retryable %v; want a non-retryable auth error with a hint", err, e.Kind, e.Retryable())
	}
	for _, secret := range []string{sas.EncodeKey(wrong), string(wrong), "SharedAccessSignature", "sig="} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error reveals %q: %v", secret, err)
		}
	}
}

func TestE2EUnknownRegistration(t *testing.T) {
	t.Parallel()
	_, ep := startEmulator(t, symmetricEnrollment("e2e-known", []byte("e2e-known-device-key-000000000000")))
	_, err := client(t, ep, "e2e-stranger", dps.SymmetricKey([]byte("whatever-key"))).Register(context.Background(), nil, nil)
	e := asDPSError(t, err)
	if e.Retryable() || !strings.Contains(e.Hint(), "enrollment") {
		t.Errorf("error %v: retryable %v; want not retryable with a hint about the enrollment", err, e.Retryable())
	}
}

func TestE2EDisabledEnrollment(t *testing.T) {
	t.Parallel()
	key := []byte("e2e-disabled-device-key-32-bytes")
	enr := symmetricEnrollment("e2e-off", key)
	off := false
	enr.Enabled = &off
	_, ep := startEmulator(t, enr)
	_, err := client(t, ep, "e2e-off", dps.SymmetricKey(key)).Register(context.Background(), nil, nil)
	e := asDPSError(t, err)
	if e.State != dps.StateDisabled || e.Retryable() || !strings.Contains(e.Hint(), "disabled") {
		t.Errorf("error %v: state %q, retryable %v; want a final 'disabled' with a hint", err, e.State, e.Retryable())
	}
}

func TestE2EThrottledPoll(t *testing.T) {
	t.Parallel()
	key := []byte("e2e-throttled-device-key-32bytes")
	e, ep := startEmulator(t, symmetricEnrollment("e2e-throttle", key))
	if _, err := e.Faults().Add(emulator.Fault{Endpoint: "dps", Operation: "poll", Action: "throttle", RetryAfter: 1}); err != nil {
		t.Fatal(err)
	}
	k := newKey(t, keys.ECDSAP256)
	res, err := client(t, ep, "e2e-throttle", dps.SymmetricKey(key)).Register(context.Background(), csrFor(t, k, "e2e-throttle"), nil)
	if err != nil {
		t.Fatal(err)
	}
	checkIssuedChain(t, res.IssuedCertificateChain, k, "e2e-throttle", ep.DeviceRootFile)
	if left := e.Faults().List(); len(left) != 0 {
		t.Errorf("the throttle fault was not hit: %+v", left)
	}
}

func TestE2ECancelWhilePolling(t *testing.T) {
	t.Parallel()
	key := []byte("e2e-cancelled-device-key-32bytes")
	_, ep := startEmulator(t, symmetricEnrollment("e2e-cancel", key))
	c := client(t, ep, "e2e-cancel", dps.SymmetricKey(key))
	ctx, cancel := context.WithCancel(context.Background())
	// The emulator answers the register request with retry-after=3, so
	// 1 s in the client is waiting to poll.
	timer := time.AfterFunc(time.Second, cancel)
	defer timer.Stop()
	start := time.Now()
	_, err := c.Register(ctx, nil, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Register returned %s after the start; want promptly after the cancel at 1s", d)
	}
}

func TestE2EUntrustedServer(t *testing.T) {
	t.Parallel()
	key := []byte("e2e-tls-device-key-0123456789abc")
	_, ep := startEmulator(t, symmetricEnrollment("e2e-tls", key))
	_, err := client(t, ep, "e2e-tls", dps.SymmetricKey(key), func(o *dps.Options) { o.TrustBundleFile = "" }).
		Register(context.Background(), nil, nil)
	e := asDPSError(t, err)
	if e.Kind != dps.KindTLS || e.Retryable() || !strings.Contains(e.Hint(), "trust_bundle_file") {
		t.Errorf("error %v; want a TLS error with a trust_bundle_file hint", err)
	}
	if bytes.Contains([]byte(err.Error()), key) {
		t.Error("the error reveals the key")
	}
}

// A CSR DPS refuses (here: its CN is not the registration ID) is a final
// bad request whose hint names the CSR rules.
func TestE2EBadCSR(t *testing.T) {
	t.Parallel()
	key := []byte("e2e-bad-csr-device-key-0123456789")
	_, ep := startEmulator(t, symmetricEnrollment("e2e-csr", key))
	k := newKey(t, keys.ECDSAP256)
	_, err := client(t, ep, "e2e-csr", dps.SymmetricKey(key)).Register(context.Background(), csrFor(t, k, "someone-else"), nil)
	e := asDPSError(t, err)
	if e.Kind != dps.KindService || e.Status != 400 || e.Code/1000 != 400 || e.Retryable() || !strings.Contains(e.Hint(), "CN must equal the registration ID") {
		t.Errorf("error %v: status %d code %d retryable %v; want a final 400 with the CSR hint", err, e.Status, e.Code, e.Retryable())
	}
}
