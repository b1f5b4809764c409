package emulator

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/emulator/pki"
	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// Conformance with Eclipse Mosquitto's command-line clients: libmosquitto over
// OpenSSL, a client stack independent of Go's TLS, of paho and of our agent.
// Each step is what a device does, with nothing but mosquitto_pub and
// mosquitto_sub. mosquitto_rr cannot take part: it refuses a response topic
// with a wildcard ("Invalid response topic"), and the wildcard filters are the
// only response filters DPS and IoT Hub grant.

// mosqWait bounds each tool run; it is a hang guard, not a timing assertion.
const mosqWait = 20 * time.Second

// requireMosquitto finds a mosquitto client. CI must have it: there a missing
// one fails the test with the command that installs it.
func requireMosquitto(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s not found (%v); install it with: sudo apt-get install -y mosquitto-clients", name, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// mosq runs the mosquitto tools against one emulator endpoint.
type mosq struct {
	pub, sub           string
	host, port, cafile string
}

func newMosq(t *testing.T, ep *Endpoints, address string) *mosq {
	t.Helper()
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		t.Fatal(err)
	}
	return &mosq{
		pub: requireMosquitto(t, "mosquitto_pub"), sub: requireMosquitto(t, "mosquitto_sub"),
		host: host, port: port, cafile: ep.TLSCAFile,
	}
}

// mosqResult is what a tool printed and how it ended.
type mosqResult struct {
	stdout, stderr string
	err            error
}

func (m *mosq) args(clientArgs []string) []string {
	return append([]string{"-h", m.host, "-p", m.port, "-V", "mqttv311", "--cafile", m.cafile}, clientArgs...)
}

// run runs tool to completion.
func (m *mosq) run(t *testing.T, tool string, args ...string) mosqResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mosqWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, m.args(args)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within %s", filepath.Base(tool), strings.Join(args, " "), mosqWait)
	}
	return mosqResult{stdout: out.String(), stderr: errOut.String(), err: err}
}

// start starts tool and returns a function that waits for it.
func (m *mosq) start(t *testing.T, tool string, args ...string) func() mosqResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mosqWait)
	cmd := exec.CommandContext(ctx, tool, m.args(args)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	wait := sync.OnceValue(func() mosqResult {
		err := cmd.Wait()
		cancel()
		return mosqResult{stdout: out.String(), stderr: errOut.String(), err: err}
	})
	t.Cleanup(func() { wait() }) // the context ends it at the latest
	return wait
}

// mosqMessage is one "-v" line: the topic, a space, the payload.
type mosqMessage struct {
	topic   string
	payload string
}

// messages parses the output of a tool run with -v and fails the test unless
// it succeeded and printed want messages.
func (r mosqResult) messages(t *testing.T, what string, want int) []mosqMessage {
	t.Helper()
	if r.err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", what, r.err, r.stdout, r.stderr)
	}
	var msgs []mosqMessage
	for line := range strings.SplitSeq(strings.TrimRight(r.stdout, "\n"), "\n") {
		topic, payload, _ := strings.Cut(line, " ")
		msgs = append(msgs, mosqMessage{topic, payload})
	}
	if len(msgs) != want {
		t.Fatalf("%s printed %d messages, want %d:\n%s", what, len(msgs), want, r.stdout)
	}
	return msgs
}

// waitSubscribed waits until the device's hub session holds filter, so that a
// message pushed next has somewhere to go.
func waitSubscribed(t *testing.T, e *Emulator, hubName, deviceID, filter string) {
	t.Helper()
	deadline := time.Now().Add(mosqWait)
	for {
		if s := e.hubs[hubName].session(deviceID); s != nil && s.subscribed(filter) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never subscribed to %s", deviceID, filter)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writePEMFile(t *testing.T, path, blockType string, ders ...[]byte) {
	t.Helper()
	var b bytes.Buffer
	for _, der := range ders {
		_ = pem.Encode(&b, &pem.Block{Type: blockType, Bytes: der})
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// mosqDevice is a device's credentials on disk, as mosquitto reads them.
type mosqDevice struct {
	key      *ecdsa.PrivateKey
	keyFile  string
	certFile string // leaf first, then the issuing CA
	leaf     *x509.Certificate
}

func newMosqDevice(t *testing.T, dir, name string) *mosqDevice {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	d := &mosqDevice{key: key, keyFile: filepath.Join(dir, name+".key"), certFile: filepath.Join(dir, name+".pem")}
	writePEMFile(t, d.keyFile, "PRIVATE KEY", der)
	return d
}

func (d *mosqDevice) csr(t *testing.T, cn string) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, d.key)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

// keep stores an issued chain (DER, leaf first) for TLS: the leaf and the
// issuing CA, as a device presents them.
func (d *mosqDevice) keep(t *testing.T, chain [][]byte) {
	t.Helper()
	if len(chain) != 3 {
		t.Fatalf("issued chain of %d certificates, want leaf, issuing CA, root", len(chain))
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if !d.key.PublicKey.Equal(leaf.PublicKey) {
		t.Fatal("the issued leaf does not hold the CSR's key")
	}
	d.leaf = leaf
	writePEMFile(t, d.certFile, "CERTIFICATE", chain[:2]...)
}

// issue has the emulator's device PKI issue the device a certificate, as DPS
// does when it assigns a device with a CSR.
func (d *mosqDevice) issue(t *testing.T, e *Emulator, deviceID string) {
	t.Helper()
	der, err := base64.StdEncoding.DecodeString(d.csr(t, deviceID))
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CheckCSR(der, deviceID, e.keyPolicy)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := e.deviceCA.Issue(csr, pki.IssueOptions{DeviceID: deviceID, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	d.keep(t, chain)
}

// mosqDebugReceived finds what mosquitto's -d output says the client
// received: "received PUBLISH (d0, q0, r0, m0, 'TOPIC', ... (N bytes))".
var mosqDebugReceived = regexp.MustCompile(`received PUBLISH \(d\d, q\d, r\d, m\d+, '([^']*)', \.\.\. \((\d+) bytes\)\)`)

// received returns the topics and payload sizes a -d run reports.
func (r mosqResult) received(t *testing.T, what string) (topics []string, sizes []int) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", what, r.err, r.stdout, r.stderr)
	}
	for _, m := range mosqDebugReceived.FindAllStringSubmatch(r.stdout+r.stderr, -1) {
		n, _ := strconv.Atoi(m[2])
		topics, sizes = append(topics, m[1]), append(sizes, n)
	}
	return topics, sizes
}

// mosqDebugSubscribed is the SUBACK in -d output: "Subscribed (mid: 1): 1, 128".
var mosqDebugSubscribed = regexp.MustCompile(`Subscribed \(mid: \d+\): ([0-9, ]+)`)

// granted returns the granted QoS codes a -d run reports.
func (r mosqResult) granted(t *testing.T) string {
	t.Helper()
	m := mosqDebugSubscribed.FindStringSubmatch(r.stdout + r.stderr)
	if m == nil {
		t.Fatalf("no SUBACK in the output (%v):\nstdout: %s\nstderr: %s", r.err, r.stdout, r.stderr)
	}
	return strings.TrimSpace(m[1])
}

// DPS answers only on the connection that asked, keeps one connection per
// registration ID and grants no response filter but $dps/registrations/res/#,
// which mosquitto_rr refuses as a response topic (it takes no wildcards). So
// mosquitto's tools can drive DPS's CONNECT and SUBSCRIBE but not a
// register/poll exchange: that is left to paho and the Node.js SDK tests.
func TestMosquittoDPS(t *testing.T) {
	dir := t.TempDir()
	const symID, x509ID = "mosq-sym-1", "mosq-x509-1"
	symKey := make([]byte, 32)
	rand.Read(symKey)
	birth := newMosqDevice(t, dir, "birth")
	writePEMFile(t, birth.certFile, "CERTIFICATE", selfSignedForMosquitto(t, birth.key, x509ID))
	impostor := newMosqDevice(t, dir, "impostor")
	writePEMFile(t, impostor.certFile, "CERTIFICATE", selfSignedForMosquitto(t, impostor.key, x509ID))

	e, ep := startTestEmulator(t, func(c *Config) {
		c.Enrollments = []Enrollment{
			{RegistrationID: symID, Attestation: Attestation{Type: AttestSymmetricKey, PrimaryKey: sas.EncodeKey(symKey)}},
			{RegistrationID: x509ID, Attestation: Attestation{Type: AttestX509, CertificateFile: birth.certFile}},
		}
	})
	dps := newMosq(t, ep, ep.DPS)
	user := func(regID string) string {
		return ep.IDScope + "/registrations/" + regID + "/api-version=2025-07-01-preview&ClientVersion=mosquitto%2F2"
	}
	token := func(key []byte, expiry time.Time) string {
		return sas.Sign(sas.DPSResource(ep.IDScope, symID), key, sas.KeyNameRegistration, expiry)
	}
	wrongKey := make([]byte, 32)
	rand.Read(wrongKey)

	for _, tc := range []struct {
		name string
		auth []string
	}{
		{"a SAS signed with another key", []string{"-i", symID, "-u", user(symID), "-P", token(wrongKey, time.Now().Add(time.Hour))}},
		{"an expired SAS", []string{"-i", symID, "-u", user(symID), "-P", token(symKey, time.Now().Add(-sas.ClockSkew-time.Minute))}},
		{"a client ID that is not the registration ID", []string{"-i", "someone", "-u", user(symID), "-P", token(symKey, time.Now().Add(time.Hour))}},
		{"a certificate that is not the enrolled one", []string{"-i", x509ID, "-u", user(x509ID), "--cert", impostor.certFile, "--key", impostor.keyFile}},
	} {
		r := dps.run(t, dps.pub, append(tc.auth, "-q", "1", "-t", "$dps/registrations/PUT/iotdps-register/?$rid=1", "-m", "{}")...)
		if r.err == nil || !strings.Contains(r.stderr, "Connection Refused: not authorised") {
			t.Errorf("%s: mosquitto_pub ended with %v, stderr %q; want mosquitto's connection-refused error", tc.name, r.err, r.stderr)
		}
	}

	for name, auth := range map[string][]string{
		"symmetric key":         {"-i", symID, "-u", user(symID), "-P", token(symKey, time.Now().Add(time.Hour))},
		"X.509 (--cert, --key)": {"-i", x509ID, "-u", user(x509ID), "--cert", birth.certFile, "--key", birth.keyFile},
	} {
		subscribe := func(filter string) mosqResult {
			return dps.run(t, dps.sub, append(auth, "-d", "-E", "-q", "2", "-t", filter)...)
		}
		// A QoS 2 subscription to the response filter is granted as QoS 1.
		if r := subscribe(dpsResponseFilter); r.granted(t) != "1" || r.err != nil {
			t.Errorf("%s: %s granted %s (%v), want QoS 1", name, dpsResponseFilter, r.granted(t), r.err)
		}
		// No other filter is served.
		if r := subscribe("$dps/registrations/res/202/#"); r.granted(t) != "128" {
			t.Errorf("%s: another filter granted %s, want 128 (refused)", name, r.granted(t))
		}
	}
	if regs := e.State().Registrations(); len(regs) != 0 {
		t.Errorf("registrations %+v: nothing was asked of DPS", regs)
	}
}

// The hub driven by mosquitto's tools: SAS and X.509 authentication,
// telemetry with a property bag, the 5-subscription limit, QoS 2, the twin and
// the credential API through a persistent session, desired properties and
// cloud-to-device messages pushed to mosquitto_sub.
//
// The twin and the credential API answer on the connection that asked, and
// mosquitto_rr takes no wildcard response topic, so their answers are read
// from mosquitto_pub's debug output (topic and size), on a connection whose
// subscription the hub kept from an earlier CleanSession 0 connection; the
// credential API's later 200 is read in full by mosquitto_sub resuming that
// session.
func TestMosquittoHub(t *testing.T) {
	dir := t.TempDir()
	const sasID, x509ID = "mosq-sas-1", "mosq-x509-1"
	// The credential API answers 3 s after its 202: time for mosquitto_sub to
	// resume the session mosquitto_pub asked on.
	e, ep := startTestEmulator(t, func(c *Config) { c.Certificates.CredentialAPIDelay = Duration(3 * time.Second) })
	hub := newMosq(t, ep, ep.Hubs["hub1"].Address)
	host := ep.Hubs["hub1"].Host

	sasKey := make([]byte, 32)
	rand.Read(sasKey)
	e.State().AssignDevice(Device{DeviceID: sasID, RegistrationID: sasID, Hub: "hub1", SymmetricKeys: [][]byte{sasKey}}, true)
	e.State().AssignDevice(Device{DeviceID: x509ID, RegistrationID: x509ID, Hub: "hub1", Issued: true}, true)
	dev := newMosqDevice(t, dir, "x509")
	dev.issue(t, e, x509ID)

	user := func(id, apiVersion string) string { return host + "/" + id + "/?api-version=" + apiVersion }
	token := func(key []byte) string {
		return sas.Sign(sas.HubResource(host, sasID), key, "", time.Now().Add(time.Hour))
	}
	sasAuth := []string{"-i", sasID, "-u", user(sasID, "2021-04-12"), "-P", token(sasKey)}
	x509Auth := []string{"-i", x509ID, "-u", user(x509ID, "2025-08-01-preview"), "--cert", dev.certFile, "--key", dev.keyFile}
	with := func(base []string, more ...string) []string { return append(append([]string{}, base...), more...) }

	t.Run("a bad SAS is a refused CONNECT", func(t *testing.T) {
		wrongKey := make([]byte, 32)
		rand.Read(wrongKey)
		r := hub.run(t, hub.pub, "-i", sasID, "-u", user(sasID, "2021-04-12"), "-P", token(wrongKey), "-q", "1",
			"-t", "devices/"+sasID+"/messages/events/", "-m", "{}")
		if r.err == nil || !strings.Contains(r.stderr, "Connection Refused: not authorised") {
			t.Errorf("mosquitto_pub ended with %v, stderr %q; want mosquitto's connection-refused error", r.err, r.stderr)
		}
	})

	t.Run("telemetry with a property bag is stored", func(t *testing.T) {
		topic := "devices/" + sasID + "/messages/events/$.ct=application%2Fjson&$.ce=utf-8&unit=%C2%B0C&note=a%20b"
		if r := hub.run(t, hub.pub, with(sasAuth, "-q", "1", "-t", topic, "-m", `{"t":21.5}`)...); r.err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", r.err, r.stderr)
		}
		_, body := call(t, ep, "GET", "/api/devices/"+sasID+"/telemetry", "")
		var msgs []TelemetryMessage
		if err := json.Unmarshal([]byte(body), &msgs); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"$.ct": "application/json", "$.ce": "utf-8", "unit": "°C", "note": "a b"}
		if len(msgs) != 1 || msgs[0].Body != `{"t":21.5}` || mustJSON(t, msgs[0].Properties) != mustJSON(t, want) {
			t.Errorf("telemetry as the admin API shows it: %s", body)
		}
	})

	t.Run("at most five subscriptions, and QoS 2 closes the connection", func(t *testing.T) {
		args := with(sasAuth, "-d", "-E", "-q", "1")
		for _, f := range []string{hubFilterTwinResponses, hubFilterDesired, hubFilterMethods, hubFilterCredentials,
			"devices/" + sasID + "/messages/devicebound/#", hubFilterC2DAnyDevice} {
			args = append(args, "-t", f)
		}
		if got := hub.run(t, hub.sub, args...).granted(t); got != "1, 1, 1, 1, 1, 128" {
			t.Errorf("six filters granted %s, want five at QoS 1 and the sixth refused", got)
		}
		r := hub.run(t, hub.pub, with(sasAuth, "-q", "2", "-t", "devices/"+sasID+"/messages/events/", "-m", "qos2")...)
		if r.err == nil {
			t.Errorf("mosquitto_pub at QoS 2 succeeded, want the hub to close the connection\n%s%s", r.stdout, r.stderr)
		}
	})

	t.Run("twin GET and reported PATCH", func(t *testing.T) {
		persistent := with(sasAuth, "-c")
		if got := hub.run(t, hub.sub, with(persistent, "-d", "-E", "-q", "1", "-t", hubFilterTwinResponses)...).granted(t); got != "1" {
			t.Fatalf("twin responses granted %s", got)
		}
		ask := func(topic string, payload ...string) ([]string, []int) {
			t.Helper()
			return hub.run(t, hub.pub, with(with(persistent, "-d", "-q", "1", "-t", topic), payload...)...).received(t, "mosquitto_pub "+topic)
		}
		var twin []byte
		e.State().WithDevice(sasID, func(d *Device) { twin = d.Twin.JSON() })
		if topics, sizes := ask("$iothub/twin/GET/?$rid=get-1", "-n"); len(topics) != 1 ||
			topics[0] != "$iothub/twin/res/200/?$rid=get-1" || sizes[0] != len(twin) {
			t.Errorf("twin GET answered %v %v, want $iothub/twin/res/200/?$rid=get-1 with the %d-byte twin", topics, sizes, len(twin))
		}
		if topics, sizes := ask("$iothub/twin/PATCH/properties/reported/?$rid=patch-1", "-m", `{"firmware":"1.2.3"}`); len(topics) != 1 ||
			topics[0] != "$iothub/twin/res/204/?$rid=patch-1&$version=2" || sizes[0] != 0 {
			t.Errorf("reported PATCH answered %v %v, want an empty 204 with $version=2", topics, sizes)
		}
		if _, body := call(t, ep, "GET", "/api/devices/"+sasID+"/twin", ""); compact(t, body) != `{"desired":{"$version":1},"reported":{"$version":2,"firmware":"1.2.3"}}` {
			t.Errorf("twin after the patch: %s", body)
		}
	})

	t.Run("desired properties and C2D are pushed to mosquitto_sub", func(t *testing.T) {
		for _, tc := range []struct {
			filter, adminMethod, adminPath, adminBody string
			topic, payload                            string
		}{
			{hubFilterDesired, "PATCH", "/twin/desired", `{"interval":30}`,
				"$iothub/twin/PATCH/properties/desired/?$version=2", `{"$version":2,"interval":30}`},
			{"devices/" + sasID + "/messages/devicebound/#", "POST", "/c2d", `{"body":"reboot","message_id":"c2d-1","properties":{"reason":"test"}}`,
				"devices/" + sasID + "/messages/devicebound/%24.mid=c2d-1&%24.to=%2Fdevices%2F" + sasID + "%2Fmessages%2FdeviceBound&reason=test", "reboot"},
		} {
			wait := hub.start(t, hub.sub, with(sasAuth, "-q", "1", "-C", "1", "-W", "15", "-v", "-t", tc.filter)...)
			waitSubscribed(t, e, "hub1", sasID, tc.filter)
			if status, body := call(t, ep, tc.adminMethod, "/api/devices/"+sasID+tc.adminPath, tc.adminBody); status != 200 {
				t.Fatalf("%s %s: %d %s", tc.adminMethod, tc.adminPath, status, body)
			}
			msg := wait().messages(t, "mosquitto_sub "+tc.filter, 1)[0]
			if msg.topic != tc.topic || compactIfJSON(t, msg.payload) != compactIfJSON(t, tc.payload) {
				t.Errorf("mosquitto_sub got %s %s, want %s %s", msg.topic, msg.payload, tc.topic, tc.payload)
			}
		}
	})

	t.Run("X.509 with an issued chain, and the credential API", func(t *testing.T) {
		if r := hub.run(t, hub.pub, with(x509Auth, "-q", "1", "-t", "devices/"+x509ID+"/messages/events/", "-m", "over x509")...); r.err != nil {
			t.Fatalf("mosquitto_pub with the issued certificate: %v\n%s", r.err, r.stderr)
		}
		_, body := call(t, ep, "GET", "/api/devices/"+x509ID, "")
		var view deviceView
		if err := json.Unmarshal([]byte(body), &view); err != nil {
			t.Fatal(err)
		}
		if view.Auth == nil || *view.Auth != "x509" || view.Certificate == nil || view.Certificate.SHA256 != Thumbprint(dev.leaf) {
			t.Errorf("device after an X.509 connection: %s", body)
		}

		persistent := with(x509Auth, "-c")
		if got := hub.run(t, hub.sub, with(persistent, "-d", "-E", "-q", "1", "-t", hubFilterCredentials)...).granted(t); got != "1" {
			t.Fatalf("credential responses granted %s", got)
		}
		renewal := newMosqDevice(t, dir, "renewal")
		req := fmt.Sprintf(`{"id":%q,"csr":%q}`, x509ID, renewal.csr(t, x509ID))
		topics, _ := hub.run(t, hub.pub, with(persistent, "-d", "-q", "1", "-t", "$iothub/credentials/POST/issueCertificate/?$rid=renew-0001", "-m", req)...).
			received(t, "mosquitto_pub issueCertificate")
		if len(topics) != 1 || topics[0] != "$iothub/credentials/res/202/?$rid=renew-0001" {
			t.Fatalf("issueCertificate answered %v, want the 202", topics)
		}
		done := hub.run(t, hub.sub, with(persistent, "-q", "1", "-C", "1", "-W", "15", "-v", "-t", hubFilterCredentials)...).
			messages(t, "mosquitto_sub "+hubFilterCredentials, 1)[0]
		var result struct {
			CorrelationID string   `json:"correlationId"`
			Certificates  []string `json:"certificates"`
		}
		if done.topic != "$iothub/credentials/res/200/?$rid=renew-0001" || json.Unmarshal([]byte(done.payload), &result) != nil || result.CorrelationID == "" {
			t.Fatalf("credential API result: %s %s", done.topic, done.payload)
		}
		var chain [][]byte
		for _, c := range result.Certificates {
			der, err := base64.StdEncoding.DecodeString(c)
			if err != nil {
				t.Fatal(err)
			}
			chain = append(chain, der)
		}
		renewal.keep(t, chain)
		if r := hub.run(t, hub.pub, "-i", x509ID, "-u", user(x509ID, "2025-08-01-preview"), "--cert", renewal.certFile, "--key", renewal.keyFile,
			"-q", "1", "-t", "devices/"+x509ID+"/messages/events/", "-m", "renewed"); r.err != nil {
			t.Errorf("connecting with the renewed certificate: %v\n%s", r.err, r.stderr)
		}
	})
}

// compactIfJSON normalises JSON for comparison and leaves other text alone.
func compactIfJSON(t *testing.T, s string) string {
	t.Helper()
	if !json.Valid([]byte(s)) {
		return s
	}
	return compact(t, s)
}

// selfSignedForMosquitto is a device's birth certificate: self-signed, CN =
// the registration ID, registered by thumbprint in its individual enrollment.
func selfSignedForMosquitto(t *testing.T, key *ecdsa.PrivateKey, cn string) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
