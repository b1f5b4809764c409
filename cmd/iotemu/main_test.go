package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"go.uber.org/goleak"

	"github.com/dpsagent/dpsagent/emulator"
)

// Every test ends every goroutine it started: the emulator's listeners,
// sessions and background work, the TPM server's connections.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// cliWait bounds every wait; it is a hang guard, not a timing assertion.
const cliWait = 20 * time.Second

// output is a writer the test can read while run writes to it.
type output struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	more chan struct{} // signalled after each write
}

func newOutput() *output { return &output{more: make(chan struct{}, 1)} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	select {
	case o.more <- struct{}{}:
	default:
	}
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// line waits for a whole line starting with prefix and returns it.
func (o *output) line(t *testing.T, prefix string, exited <-chan int) string {
	t.Helper()
	deadline := time.After(cliWait)
	for {
		lines := strings.Split(o.String(), "\n")
		for _, l := range lines[:len(lines)-1] { // the last is not finished yet
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		select {
		case <-o.more:
		case code := <-exited:
			t.Fatalf("iotemu exited with %d before printing %q", code, prefix)
		case <-deadline:
			t.Fatalf("no line starting with %q within %s; output so far: %q", prefix, cliWait, o.String())
		}
	}
}

// iotemu is one run of the command, in-process.
type iotemu struct {
	t              *testing.T
	cancel         context.CancelFunc
	exited         chan int
	stdout, stderr *output
}

func start(t *testing.T, args ...string) *iotemu {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &iotemu{t: t, cancel: cancel, exited: make(chan int, 1), stdout: newOutput(), stderr: newOutput()}
	go func() { r.exited <- run(ctx, args, r.stdout, r.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.exited:
		case <-time.After(cliWait):
			t.Error("iotemu did not exit after its context ended")
		}
	})
	return r
}

// stop cancels the run, as SIGINT does, and returns the exit code.
func (r *iotemu) stop() int {
	r.t.Helper()
	r.cancel()
	select {
	case code := <-r.exited:
		r.exited <- code // for the cleanup
		return code
	case <-time.After(cliWait):
		r.t.Fatal("iotemu did not exit after its context ended")
		return -1
	}
}

// runToEnd runs a command that must end by itself and returns its exit code,
// stdout and stderr.
func runToEnd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	r := start(t, args...)
	select {
	case code := <-r.exited:
		r.exited <- code
		return code, r.stdout.String(), r.stderr.String()
	case <-time.After(cliWait):
		t.Fatalf("iotemu %s did not finish", strings.Join(args, " "))
		return -1, "", ""
	}
}

// loopbackConfig puts every listener on a free loopback port.
const loopbackConfig = `
dps: {listen: "127.0.0.1:0"}
hubs: [{name: hub1, host: 127.0.0.1, listen: "127.0.0.1:0"}]
admin: {listen: "127.0.0.1:0"}
`

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// serve starts iotemu serve and returns the endpoints of its ready line,
// after checking they are what endpoints.json says.
func serve(t *testing.T, data, config string) (*iotemu, emulator.Endpoints) {
	t.Helper()
	r := start(t, "serve", "--data", data, "--config", config)
	line := r.stdout.line(t, "ready ", r.exited)
	var ready, file emulator.Endpoints
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "ready ")), &ready); err != nil {
		t.Fatalf("ready line %q: %v", line, err)
	}
	raw, err := os.ReadFile(filepath.Join(data, emulator.EndpointsFile))
	if err != nil {
		t.Fatalf("endpoints.json after the ready line: %v", err)
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatalf("endpoints.json: %v\n%s", err, raw)
	}
	if mustJSON(t, ready) != mustJSON(t, file) {
		t.Errorf("the ready line says %s, endpoints.json %s", mustJSON(t, ready), mustJSON(t, file))
	}
	return r, file
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// port returns the port of HOST:PORT and fails on port 0.
func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(strings.TrimPrefix(addr, "http://"))
	if err != nil || p == "0" || p == "" {
		t.Fatalf("address %q: want the actual port (%v)", addr, err)
	}
	return p
}

func TestServeNeedsData(t *testing.T) {
	code, _, stderr := runToEnd(t, "serve")
	if code != 1 || !strings.Contains(stderr, "--data is required") {
		t.Errorf("serve without --data: exit %d, stderr %q", code, stderr)
	}
}

func TestServeRefusesABadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, want string }{
		{"id_scop: 0ne00000001", "field id_scop not found"},
		{"certificates: {credential_api_body: xml}", "certificates.credential_api_body"},
		{"certificates: {credential_api_conflict_code: 409}", "certificates.credential_api_conflict_code"},
		{"hubs: [{name: a}]", "hubs[0].listen"},
		{"dps: {listen: nowhere}", "nowhere"},
	} {
		cfg := writeFile(t, dir, "bad.yaml", tc.yaml)
		code, stdout, stderr := runToEnd(t, "serve", "--data", filepath.Join(dir, "data"), "--config", cfg)
		if code != 1 || !strings.Contains(stderr, tc.want) || strings.Contains(stdout, "ready") {
			t.Errorf("config %q: exit %d, stdout %q, stderr %q; want exit 1 naming %q", tc.yaml, code, stdout, stderr, tc.want)
		}
	}
	if code, _, stderr := runToEnd(t, "serve", "--data", filepath.Join(dir, "data"), "--config", filepath.Join(dir, "absent.yaml")); code != 1 || !strings.Contains(stderr, "absent.yaml") {
		t.Errorf("a missing config file: exit %d, stderr %q", code, stderr)
	}
}

// A device registry that cannot be read stops serve before it listens, with
// an error naming the file and what to do; the file is left alone.
func TestServeRefusesADamagedRegistry(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(filepath.Join(data, emulator.RegistryDir), 0o700); err != nil {
		t.Fatal(err)
	}
	const torn = `{"format_version":1,"device_id":"gw`
	file := writeFile(t, filepath.Join(data, emulator.RegistryDir), "gw.json", torn)
	cfg := writeFile(t, dir, "iotemu.yaml", loopbackConfig)
	code, stdout, stderr := runToEnd(t, "serve", "--data", data, "--config", cfg)
	if code != 1 || strings.Contains(stdout, "ready") || !strings.Contains(stderr, file) || !strings.Contains(stderr, "delete it") {
		t.Errorf("serve over a torn device file: exit %d, stdout %q, stderr %q; want exit 1 naming %s and the fix", code, stdout, stderr, file)
	}
	if got := string(readFile(t, file)); got != torn {
		t.Errorf("the device file was rewritten: %q", got)
	}
}

// serve on port-0 listeners prints its ready line once everything is up,
// writes the actual addresses to endpoints.json, answers on the admin API, and
// exits cleanly when told to. A second run on the same data directory keeps
// both CAs.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := writeFile(t, dir, "iotemu.yaml", loopbackConfig)
	r, ep := serve(t, data, cfg)
	for _, addr := range []string{ep.DPS, ep.Hubs["hub1"].Address, ep.Admin} {
		port(t, addr)
	}
	if ep.IDScope != emulator.DefaultIDScope || ep.Hubs["hub1"].Host != "127.0.0.1" ||
		ep.TLSCAFile != filepath.Join(data, "tls-ca.pem") || ep.DeviceRootFile != filepath.Join(data, "device-root.pem") {
		t.Errorf("endpoints %+v", ep)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: cliWait}
	resp, err := client.Get(ep.Admin + "/api/enrollments")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Errorf("GET /api/enrollments: %d %s", resp.StatusCode, body)
	}
	// The servers present certificates from DATA/tls-ca.pem.
	roots := caPool(t, ep.TLSCAFile)
	for _, addr := range []string{ep.DPS, ep.Hubs["hub1"].Address} {
		handshake(t, addr, roots)
	}
	if !strings.Contains(r.stderr.String(), "iotemu ready") {
		t.Errorf("the log does not say the emulator is ready: %q", r.stderr.String())
	}
	if code := r.stop(); code != 0 {
		t.Fatalf("exit %d after cancel; stderr %q", code, r.stderr.String())
	}

	deviceRoot, tlsCA := readFile(t, ep.DeviceRootFile), readFile(t, ep.TLSCAFile)
	r, ep2 := serve(t, data, cfg)
	if !bytes.Equal(readFile(t, ep2.DeviceRootFile), deviceRoot) || !bytes.Equal(readFile(t, ep2.TLSCAFile), tlsCA) {
		t.Error("a restart on the same data directory replaced a CA")
	}
	handshake(t, ep2.DPS, roots) // clients that kept the old tls-ca.pem still connect
	if code := r.stop(); code != 0 {
		t.Fatalf("second run: exit %d", code)
	}
}

// A "localhost:0" listener is one port on both 127.0.0.1 and ::1, because
// clients that resolve localhost try ::1 first.
func TestServeLocalhostListensOnBothLoopbacks(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "iotemu.yaml", strings.Replace(loopbackConfig, `dps: {listen: "127.0.0.1:0"}`, `dps: {listen: "localhost:0"}`, 1))
	r, ep := serve(t, filepath.Join(dir, "data"), cfg)
	p := port(t, ep.DPS)
	roots := caPool(t, ep.TLSCAFile)
	handshake(t, net.JoinHostPort("127.0.0.1", p), roots)
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Logf("no IPv6 loopback on this machine (%v): ::1 not checked", err)
	} else {
		l.Close()
		handshake(t, net.JoinHostPort("::1", p), roots)
	}
	// The certificate names localhost too, for clients that connect by name.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: cliWait}, "tcp", net.JoinHostPort("127.0.0.1", p),
		&tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Errorf("TLS as localhost: %v", err)
	} else {
		conn.Close()
	}
	r.stop()
}

func TestTPM(t *testing.T) {
	r := start(t, "tpm", "--listen", "127.0.0.1:0")
	line := r.stdout.line(t, "ready: simulated TPM on tcp:", r.exited)
	addr := strings.TrimPrefix(line, "ready: simulated TPM on tcp:")
	port(t, addr)
	conn, err := net.DialTimeout("tcp", addr, cliWait)
	if err != nil {
		t.Fatal(err)
	}
	rsp, err := tpm2.GetRandom{BytesRequested: 16}.Execute(transport.FromReadWriter(conn))
	conn.Close()
	if err != nil || len(rsp.RandomBytes.Buffer) != 16 {
		t.Errorf("TPM2_GetRandom over tcp:%s: %v", addr, err)
	}
	if code := r.stop(); code != 0 {
		t.Fatalf("exit %d after cancel; stderr %q", code, r.stderr.String())
	}
}

func TestTPMRefusesABusyAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	code, stdout, stderr := runToEnd(t, "tpm", "--listen", l.Addr().String())
	if code != 1 || strings.Contains(stdout, "ready") || !strings.Contains(stderr, l.Addr().String()) {
		t.Errorf("tpm on a busy port: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func caPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(readFile(t, file)) {
		t.Fatalf("no certificate in %s", file)
	}
	return pool
}

// handshake completes a TLS 1.2+ handshake with addr, checking the server
// certificate against roots and the address's IP.
func handshake(t *testing.T, addr string, roots *x509.CertPool) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: cliWait}, "tcp", addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Errorf("TLS handshake with %s: %v", addr, err)
		return
	}
	conn.Close()
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
