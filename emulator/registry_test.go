package emulator

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// registryTestConfig has one hub and the DPS enrollments of the restart test:
// symmetric-key devices (one connecting to the hub with SAS, two with the
// certificate DPS issues them) and an X.509 group.
func registryTestConfig(enrollments ...Enrollment) Config {
	return Config{
		DPS:          ListenerConfig{Listen: "127.0.0.1:0"},
		Hubs:         []HubConfig{{Name: "hub1", Host: hub1Host, Listen: "127.0.0.1:0"}},
		Admin:        ListenerConfig{Listen: "127.0.0.1:0"},
		Certificates: CertificatesConfig{CredentialAPIDelay: Duration(100 * time.Millisecond)},
		Enrollments:  enrollments,
	}
}

// fastDPS makes assignments take 20 ms, as startDPSEmulator does.
func fastDPS(e *Emulator) { e.dps.assignDelay = 20 * time.Millisecond }

// provisionThroughDPS registers regID with DPS over paho and TLS, with a CSR
// when csrKey is not nil, and returns the issued chain (nil without a CSR).
func provisionThroughDPS(t *testing.T, ep *Endpoints, dial dpsDial, csrKey *ecdsa.PrivateKey) []*x509.Certificate {
	t.Helper()
	var csr []byte
	if csrKey != nil {
		csr = dpsCSRFor(t, csrKey, dial.regID)
	}
	cl := dial.mustConnect(t, ep)
	defer cl.c.Disconnect(0)
	final, st := cl.provision(registerBody(dial.regID, csr, ""))
	if st.Status != "assigned" || st.RegistrationState.AssignedHub != hub1Host {
		t.Fatalf("provision %s: %s", dial.regID, final.body)
	}
	if csrKey == nil {
		return nil
	}
	return dpsChain(t, st.RegistrationState)
}

// twinOf reads the device's twin over its own connection, as a device does
// after reconnecting.
func twinOf(t *testing.T, c *hubClient, rid string) string {
	t.Helper()
	return string(c.getTwinRaw(t, rid))
}

func patchReported(t *testing.T, c *hubClient, rid, patch string, wantVersion int) {
	t.Helper()
	c.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid="+rid, 1, []byte(patch))
	c.expect(t, "$iothub/twin/res/204/?$rid="+rid+"&$version="+strconv.Itoa(wantVersion))
}

// Devices provisioned through DPS before a restart connect to the hub after
// it, over the same data directory, without registering again and with no
// enrollment left: with SAS, with the certificate DPS issued, and with a
// certificate of their X.509 group. Their twins come back with the same
// properties and $versions, which go on counting; a revoked device stays
// revoked. Connecting and telemetry do not write the registry.
func TestRegistrySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	sasKey, certKey, revokedKey := dpsKey("restart-sas"), dpsKey("restart-cert"), dpsKey("restart-revoked")
	root := newDPSTestCA(t, "restart fleet root", nil)
	inter := newDPSTestCA(t, "restart fleet intermediate", root)
	memberLeaf, memberKey := dpsLeaf(t, "member-1", inter, time.Now().Add(time.Hour))
	memberCert := dpsTLSCert(memberKey, memberLeaf, inter.cert)
	cfg := registryTestConfig(
		dpsSymmetricEnrollment("sas-dev", sasKey),
		dpsSymmetricEnrollment("cert-dev", certKey),
		dpsSymmetricEnrollment("revoked-dev", revokedKey),
		Enrollment{GroupID: "restart-fleet", Attestation: Attestation{Type: AttestX509, CAPEM: dpsPEM(root.cert)}},
	)

	env := openHubEnv(t, cfg, dir, nil, fastDPS)
	provisionThroughDPS(t, env.ep, dpsDial{regID: "sas-dev", password: dpsSAS(t, env.ep.IDScope, "sas-dev", sasKey)}, nil)
	certCSRKey, _ := dpsCSR(t, "cert-dev")
	certChain := provisionThroughDPS(t, env.ep, dpsDial{regID: "cert-dev", password: dpsSAS(t, env.ep.IDScope, "cert-dev", certKey)}, certCSRKey)
	issuedCert := dpsTLSCert(certCSRKey, certChain[0], certChain[1])
	revokedCSRKey, _ := dpsCSR(t, "revoked-dev")
	revokedChain := provisionThroughDPS(t, env.ep, dpsDial{regID: "revoked-dev", password: dpsSAS(t, env.ep.IDScope, "revoked-dev", revokedKey)}, revokedCSRKey)
	revokedCert := dpsTLSCert(revokedCSRKey, revokedChain[0], revokedChain[1])
	provisionThroughDPS(t, env.ep, dpsDial{regID: "member-1", certs: []tls.Certificate{memberCert}}, nil)

	sasDeviceKey, err := sas.DecodeKey(sasKey)
	if err != nil {
		t.Fatal(err)
	}
	sasDial := func() hubDial {
		return hubDial{clientID: "sas-dev", username: hubUser(hub1Host, "sas-dev", hubAPIGA),
			password: hubSASToken(hub1Host, "sas-dev", sasDeviceKey, time.Now().Add(time.Hour)), clean: true}
	}
	certDial := hubDial{clientID: "cert-dev", username: hubUser(hub1Host, "cert-dev", hubAPIGA), cert: &issuedCert, clean: true}
	memberDial := hubDial{clientID: "member-1", username: hubUser(hub1Host, "member-1", hubAPIGA), cert: &memberCert, clean: true}

	sasDev := env.mustConnect(t, sasDial())
	sasDev.mustSubscribe(t, hubFilterTwinResponses)
	patchReported(t, sasDev, "1", `{"fw":"1.0","big":12345678901234567890,"cert":{"validUntil":"2030-01-01T00:00:00Z"}}`, 2)
	patchReported(t, sasDev, "2", `{"fw":"1.1","cert":{"validFrom":"2029-01-01T00:00:00Z"}}`, 3)
	if status, body := call(t, env.ep, "PATCH", "/api/devices/sas-dev/twin/desired", `{"interval":30,"renew":{"id":"r-1"}}`); status != 200 {
		t.Fatalf("patch desired: %d %s", status, body)
	}
	sasTwin := twinOf(t, sasDev, "3")
	certDev := env.mustConnect(t, certDial)
	certDev.mustSubscribe(t, hubFilterTwinResponses)
	patchReported(t, certDev, "1", `{"certificate":{"serial":"`+NewCertificateInfo(certChain[0]).Serial+`"}}`, 2)
	certTwin := twinOf(t, certDev, "2")
	env.mustConnect(t, memberDial).Disconnect(0)
	if status, body := call(t, env.ep, "POST", "/api/devices/revoked-dev/revoke", ""); status != 200 {
		t.Fatalf("revoke: %d %s", status, body)
	}

	registry := filepath.Join(dir, RegistryDir)
	saved := registryFiles(t, registry)
	if len(saved) != 4 {
		t.Fatalf("device registry after provisioning: %v, want a file for each of the 4 devices", slices.Sorted(maps.Keys(saved)))
	}
	sasDev.publish(t, "devices/sas-dev/messages/events/kind=telemetry", 1, []byte(`{"t":21.5}`))
	env.mustConnect(t, memberDial).Disconnect(0)
	if after := registryFiles(t, registry); !maps.Equal(after, saved) {
		t.Error("telemetry or a connection rewrote the device registry")
	}
	for _, p := range []string{registry, filepath.Join(registry, "sas-dev.json")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v; want it private (it holds device keys)", p, fi.Mode())
		}
	}
	env.close()

	// The same data directory, and no enrollments: the hub alone must know
	// the devices.
	env = openHubEnv(t, registryTestConfig(), dir, nil, fastDPS)
	for _, id := range []string{"sas-dev", "cert-dev", "member-1"} {
		d, ok := env.e.State().Device(id)
		if !ok {
			t.Errorf("%s is not in the hub's registry after the restart", id)
			continue
		}
		if d.Connected || d.AuthMethod != "" || len(d.Telemetry) != 0 || d.Revoked {
			t.Errorf("%s after the restart: connected %v, auth %q, %d telemetry messages, revoked %v; want a disconnected device and no messages",
				id, d.Connected, d.AuthMethod, len(d.Telemetry), d.Revoked)
		}
	}

	sasDev = env.mustConnect(t, sasDial())
	sasDev.mustSubscribe(t, hubFilterTwinResponses)
	if got := twinOf(t, sasDev, "1"); got != sasTwin {
		t.Errorf("SAS device's twin after the restart:\n got %s\nwant %s", got, sasTwin)
	}
	patchReported(t, sasDev, "2", `{"fw":"1.2"}`, 4)

	certDev = env.mustConnect(t, certDial)
	certDev.mustSubscribe(t, hubFilterTwinResponses)
	if got := twinOf(t, certDev, "1"); got != certTwin {
		t.Errorf("X.509 device's twin after the restart:\n got %s\nwant %s", got, certTwin)
	}
	if d := env.device(t, "cert-dev"); d.AuthMethod != hubAuthX509 {
		t.Errorf("cert-dev connected with %q, want x509", d.AuthMethod)
	}
	env.mustConnect(t, memberDial)

	if _, code := env.connect(t, hubDial{clientID: "revoked-dev", username: hubUser(hub1Host, "revoked-dev", hubAPIGA), cert: &revokedCert, clean: true}); code != 5 {
		t.Errorf("revoked certificate after the restart: CONNACK %d, want 5", code)
	}
	if status, body := call(t, env.ep, "GET", "/api/devices/revoked-dev", ""); status != 200 || !strings.Contains(body, `"revoked": true`) {
		t.Errorf("revoked device after the restart: %d %s", status, body)
	}
}

// registryFiles reads every file of the registry directory, by name.
func registryFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	return files
}

// registryEntryJSON is device d1's file, with extra fields appended.
func registryEntryJSON(extra string) string {
	return `{"format_version":1,"device_id":"d1","registration_id":"d1","hub":"hub1","enrollment":"","symmetric_keys":null,` +
		`"thumbprints":null,"ca_certificates":null,"issued":false,"revoked":false,"certificate":null,` +
		`"twin":{"desired":{},"desired_version":1,"reported":{},"reported_version":1}` + extra + `}`
}

// A device file iotemu cannot read stops it with an error that names the
// file and the ways out, and the file is left as it was for the user to look
// at.
func TestRegistryRefusesDamagedFile(t *testing.T) {
	entry := registryEntryJSON("")
	for _, tc := range []struct {
		name, file, content, want string
	}{
		{"empty", "d1.json", "", "not a device registry file"},
		{"not JSON", "d1.json", "device_id: d1", "not a device registry file"},
		{"torn", "d1.json", entry[:len(entry)/2], "not a device registry file"},
		{"no version", "d1.json", strings.Replace(entry, `"format_version":1,`, "", 1), "no format_version"},
		{"newer version", "d1.json", `{"format_version":3,"device_id":"d1","labels":{}}`, "format_version 3: this iotemu reads 1 to 2"},
		{"unknown field", "d1.json", registryEntryJSON(`,"enabled":true`), `unknown field "enabled"`},
		{"second value", "d1.json", entry + " {}", "not a device registry file"},
		{"misnamed", "d2.json", entry, `it holds device "d1", whose file is d1.json`},
		{"twin version 0", "d1.json", strings.Replace(entry, `"desired_version":1`, `"desired_version":0`, 1), "start at 1"},
		{"bad CA", "d1.json", strings.Replace(entry, `"ca_certificates":null`, `"ca_certificates":["AAAA"]`, 1), "ca_certificates[0]"},
		{"bad key", "d1.json", strings.Replace(entry, `"symmetric_keys":null`, `"symmetric_keys":["not base64!"]`, 1), "illegal base64"},
		{"no hub", "d1.json", strings.Replace(entry, `"hub":"hub1"`, `"hub":""`, 1), "hub is empty"},
		{"initial_hub in version 1", "d1.json", strings.Replace(entry, `"hub":"hub1"`, `"hub":"hub1","initial_hub":"hub2"`, 1), "initial_hub is not part of format_version 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			registry := filepath.Join(dir, RegistryDir)
			if err := os.Mkdir(registry, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(registry, tc.file)
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			e, err := New(registryTestConfig(), dir, Options{Logger: zaptest.NewLogger(t)})
			if err == nil {
				e.Close()
				t.Fatal("the emulator started over a damaged device registry")
			}
			for _, want := range []string{path, tc.want, "delete it to forget that device", "delete " + registry + " to start with an empty registry"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if after, _ := os.ReadFile(path); string(after) != tc.content {
				t.Error("the damaged file was changed")
			}
		})
	}
}

// Files that are not a device's (a temporary file a crash left, a note)
// are passed over.
func TestRegistryIgnoresOtherFiles(t *testing.T) {
	dir := t.TempDir()
	registry := filepath.Join(dir, RegistryDir)
	if err := os.Mkdir(registry, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"d1.json":                registryEntryJSON(""),
		".d1.json.123456789.tmp": `{"format_version":1,"device_id":"d1"`,
		"README":                 "devices of the demo",
	} {
		if err := os.WriteFile(filepath.Join(registry, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := openTestRegistry(t, dir)
	if ids := s.Devices(); len(ids) != 1 || ids[0] != "d1" {
		t.Errorf("devices %v, want d1 alone", ids)
	}
}

// openTestRegistry is a State saving in dir's registry, as New opens it.
func openTestRegistry(t *testing.T, dir string) *State {
	t.Helper()
	s := NewState(nil)
	if err := s.openRegistry(filepath.Join(dir, RegistryDir), zaptest.NewLogger(t)); err != nil {
		t.Fatal(err)
	}
	return s
}

// Changes made at once from many goroutines, to one device and to several,
// are all saved: each device's file ends with its latest state.
func TestRegistrySavesConcurrentChanges(t *testing.T) {
	dir := t.TempDir()
	s := openTestRegistry(t, dir)
	const devices, writers, patches = 4, 4, 10
	for i := range devices {
		s.AssignDevice(Device{DeviceID: "dev-" + strconv.Itoa(i), Hub: "hub1", SymmetricKeys: [][]byte{[]byte("k")}}, true)
	}
	var wg sync.WaitGroup
	errs := make(chan error, devices*writers*patches)
	for i := range devices * writers {
		wg.Go(func() {
			for p := range patches {
				_, err := s.updateDevice("dev-"+strconv.Itoa(i%devices), func(d *Device) {
					MergePatch(d.Twin.Reported, map[string]any{"writer" + strconv.Itoa(i/devices): p})
					d.Twin.ReportedVersion++
				})
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	reopened := openTestRegistry(t, dir)
	for i := range devices {
		id := "dev-" + strconv.Itoa(i)
		var want []byte
		s.WithDevice(id, func(d *Device) { want = d.Twin.JSON() })
		var got []byte
		if !reopened.WithDevice(id, func(d *Device) { got = d.Twin.JSON() }) || !bytes.Equal(got, want) {
			t.Errorf("%s reloaded: twin %s, want %s", id, got, want)
		}
		if !bytes.Contains(want, []byte(`"$version":`+strconv.Itoa(writers*patches+1))) {
			t.Errorf("%s: twin %s, want reported $version %d", id, want, writers*patches+1)
		}
	}
}

// A change that cannot be saved is reported to its caller and kept in
// memory; the device's next write that succeeds carries it.
func TestRegistrySaveFailureIsReported(t *testing.T) {
	dir := t.TempDir()
	s := openTestRegistry(t, dir)
	s.AssignDevice(Device{DeviceID: "dev", Hub: "hub1"}, true)
	registry := filepath.Join(dir, RegistryDir)
	if err := os.RemoveAll(registry); err != nil {
		t.Fatal(err)
	}
	bump := func() error {
		_, err := s.updateDevice("dev", func(d *Device) { d.Twin.DesiredVersion++ })
		return err
	}
	if err := bump(); err == nil || !strings.Contains(err.Error(), filepath.Join(registry, "dev.json")) {
		t.Fatalf("saving into a removed registry directory: %v, want an error naming the device's file", err)
	}
	if d, _ := s.Device("dev"); d.Twin.DesiredVersion != 2 {
		t.Errorf("desired $version %d in memory after the failed save, want 2", d.Twin.DesiredVersion)
	}
	if err := os.Mkdir(registry, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := bump(); err != nil {
		t.Fatal(err)
	}
	if d, ok := openTestRegistry(t, dir).Device("dev"); !ok || d.Twin.DesiredVersion != 3 {
		t.Errorf("reloaded after the directory came back: found %v, desired $version %d; want 3", ok, d.Twin.DesiredVersion)
	}
}

// A State made by NewState alone, without a data directory, keeps its
// devices in memory: saving is a no-op, not an error.
func TestRegistryInMemoryState(t *testing.T) {
	s := NewState(nil)
	s.AssignDevice(Device{DeviceID: "dev", Hub: "hub1"}, true)
	found, err := s.updateDevice("dev", func(d *Device) { d.Twin.ReportedVersion++ })
	if !found || err != nil {
		t.Fatalf("update: found %v, %v", found, err)
	}
	if d, _ := s.Device("dev"); d.Twin.ReportedVersion != 2 {
		t.Errorf("reported $version %d, want 2", d.Twin.ReportedVersion)
	}
}

// Every credential form and twin value comes back from the file as it was
// written: keys, thumbprints and CA certificates byte for byte, numbers
// exactly.
func TestRegistryRoundTrip(t *testing.T) {
	ca := newDPSTestCA(t, "round-trip CA", nil)
	issued := &CertificateInfo{Serial: "0A1B", NotBefore: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), SHA256: "AB12"}
	for _, in := range []*Device{
		{DeviceID: "Gateway-1", RegistrationID: "gateway-1", Hub: "hub2", EnrollmentKey: "group:fleet",
			SymmetricKeys: [][]byte{{0, 1, 2, 255}}, Issued: true, Revoked: true, Certificate: issued,
			Twin: Twin{Desired: map[string]any{"a": json.Number("12345678901234567890")}, DesiredVersion: 7,
				Reported: map[string]any{"nested": map[string]any{"x": "y"}}, ReportedVersion: 3}},
		{DeviceID: "thumb", Hub: "hub1", Thumbprints: []string{"AABB"}, CAs: []*x509.Certificate{ca.cert}, Twin: NewTwin()},
	} {
		data, err := encodeRegistryEntry(in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := decodeRegistryEntry(data)
		if err != nil {
			t.Fatalf("decode %s: %v", data, err)
		}
		if again, _ := encodeRegistryEntry(out); !bytes.Equal(again, data) {
			t.Errorf("re-encoded differently:\n%s\nwas\n%s", again, data)
		}
		if out.DeviceID != in.DeviceID || len(out.CAs) != len(in.CAs) || (len(in.CAs) > 0 && !out.CAs[0].Equal(in.CAs[0])) ||
			string(out.Twin.JSON()) != string(in.Twin.JSON()) || !bytes.Equal(bytes.Join(out.SymmetricKeys, nil), bytes.Join(in.SymmetricKeys, nil)) {
			t.Errorf("decoded %+v, want %+v", out, in)
		}
	}
}

// Device IDs become readable file names where they can; others are escaped,
// and the longest hashed, so that every name is a plain file of its own.
func TestRegistryFileName(t *testing.T) {
	long, escapedTooLong := strings.Repeat("x", 128), strings.Repeat(":", 128)
	sum := sha256.Sum256([]byte(escapedTooLong))
	for _, tc := range []struct{ key, want string }{
		{"gw-001", "gw-001.json"},
		{"sensor_7.b", "sensor_7.b.json"},
		{"a:b", "a%3Ab.json"},
		{".hidden", "%2Ehidden.json"},
		{"..", "%2E..json"},
		{"a/b", "a%2Fb.json"},
		{"50%", "50%25.json"},
		{long, long + ".json"},
		{escapedTooLong, "sha256=" + hex.EncodeToString(sum[:]) + ".json"},
	} {
		if got := registryFileName(tc.key); got != tc.want {
			t.Errorf("registryFileName(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}
