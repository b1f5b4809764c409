package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/mqtt"
	"github.com/dpsagent/dpsagent/mqtt/sas"
	"github.com/dpsagent/dpsagent/tpm/softkey"
)

// The files an operator hands the agent are read twice: by `dpsagent init`,
// whose checks judge each answer as it is typed, and by the service when it
// starts. The fuzz targets below hold the two to the same verdict, so init
// never writes a configuration the service then refuses (or refuses one it
// would run with), and every refusal names the file.

// FuzzSymmetricKeyFile: onboarding.symmetric_key_file. init's check and the
// service's reader agree; the service gives a key or an error; errors name
// the file and add nothing to DecodeKey's own message, which never holds
// the key (see mqtt/sas FuzzDecodeKey).
//
//	go test -run '^$' -fuzz FuzzSymmetricKeyFile -fuzztime 60s ./cmd/dpsagent/
func FuzzSymmetricKeyFile(f *testing.F) {
	for _, s := range []string{
		"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\n", // initKeyFile's key
		"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=", "  c2VjcmV0\r\n", "", "\n",
		"HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0", "-----BEGIN PRIVATE KEY-----\nAAAA\n", "not a key",
	} {
		f.Add([]byte(s))
	}
	path := filepath.Join(f.TempDir(), "onboarding.key")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		initErr := checkSymmetricKeyFile(path)
		cfg := &Config{}
		cfg.Onboarding.SymmetricKeyFile = path
		key, err := cfg.onboardingKey()
		if (key == nil) == (err == nil) {
			t.Fatalf("onboardingKey = %x, %v: want exactly one", key, err)
		}
		if (initErr == nil) != (err == nil) {
			t.Fatalf("init says %v, the service says %v", initErr, err)
		}
		if err == nil {
			return
		}
		_, decodeErr := sas.DecodeKey(string(data))
		if decodeErr == nil {
			t.Fatalf("the service refuses a key DecodeKey accepts: %v", err)
		}
		for _, e := range []struct {
			err    error
			prefix string
		}{{initErr, path + ": "}, {err, "onboarding.symmetric_key_file " + path + ": "}} {
			if e.err.Error() != e.prefix+decodeErr.Error() {
				t.Fatalf("error %q: want %q and DecodeKey's message", e.err, e.prefix)
			}
		}
	})
}

// FuzzBirthCertificate: onboarding.x509.certificate_file and the key named
// by onboarding.x509.key (file:PATH, or tpm-blob:PATH read by the software
// backend, as with tpm: none). What init's checks accept, the service
// accepts (for file: keys, and only then, since init cannot load a TPM blob
// without the TPM); every certificate the service would present to DPS
// parses; and every refusal names the file or the setting at fault.
//
//	go test -run '^$' -fuzz FuzzBirthCertificate -fuzztime 60s ./cmd/dpsagent/
func FuzzBirthCertificate(f *testing.F) {
	const regID = "gateway-001"
	certPEM, keyPEM := birthPEM(f, regID, nil)
	otherCert, otherKey := birthPEM(f, "gateway-002", nil)
	caCert, _ := birthPEM(f, "manufacturing CA", nil)
	for _, blob := range []bool{false, true} {
		f.Add(certPEM, keyPEM, blob)
		f.Add(append(bytes.Clone(certPEM), caCert...), keyPEM, blob)
		f.Add(certPEM, otherKey, blob)
		f.Add(otherCert, otherKey, blob)
	}
	block, _ := pem.Decode(certPEM)
	f.Add(append(bytes.Clone(certPEM), "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"...), keyPEM, false)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes[:len(block.Bytes)/2]}), keyPEM, false)
	f.Add(append(bytes.Clone(keyPEM), certPEM...), keyPEM, false)
	f.Add(block.Bytes, keyPEM, false)
	f.Add([]byte{}, []byte{}, false)

	dir := f.TempDir()
	certPath, keyPath := filepath.Join(dir, "birth.pem"), filepath.Join(dir, "birth.key")
	f.Fuzz(func(t *testing.T, cert, key []byte, blob bool) {
		if err := os.WriteFile(certPath, cert, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyPath, key, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := &Config{IDScope: "0ne00000001", RegistrationID: regID, Identity: IdentityX509}
		cfg.Onboarding.Method = OnboardX509
		cfg.Onboarding.X509.CertificateFile = certPath
		cfg.Onboarding.X509.Key = "file:" + keyPath
		if blob {
			cfg.Onboarding.X509.Key = "tpm-blob:" + keyPath
		}
		cfg.Advanced.DPSEndpoint = configDefaults["advanced.dps_endpoint"].(string)

		// init: the certificate's question, then the key's.
		certErr := checkBirthCertificate(cfg, certPath)
		keyErr := checkX509Key(cfg, cfg.Onboarding.X509.Key)
		// The wizard asked for the file a line above: an error names it, or
		// says what to use instead (another registration ID, the right key).
		for _, e := range []error{certErr, keyErr} {
			if e != nil && !strings.Contains(e.Error(), certPath) && !strings.Contains(e.Error(), keyPath) && !strings.Contains(e.Error(), "use ") {
				t.Fatalf("init's error names no file and no fix: %v", e)
			}
		}
		// The service: the same files, through to the DPS client's checks.
		_, runErr := newRegistrar(cfg, &softkey.Backend{}, zap.NewNop())
		if runErr != nil && !strings.Contains(runErr.Error(), "onboarding.x509") && !strings.Contains(runErr.Error(), "X.509 onboarding") {
			t.Fatalf("the service's error names neither the setting nor X.509 onboarding: %v", runErr)
		}
		initOK := certErr == nil && keyErr == nil
		if runErr == nil && !initOK {
			t.Fatalf("the service runs with files init refuses: certificate %v, key %v", certErr, keyErr)
		}
		if !blob && initOK && runErr != nil {
			t.Fatalf("init accepts files the service refuses: %v", runErr)
		}
		if runErr == nil {
			chain, err := readCertificates(certPath)
			if err != nil {
				t.Fatal(err)
			}
			for i, der := range chain {
				if _, err := x509.ParseCertificate(der); err != nil {
					t.Fatalf("the service would present certificate %d of %s to DPS, and it does not parse: %v", i+1, certPath, err)
				}
			}
		}
	})
}

// FuzzTrustBundleCheck: advanced.trust_bundle_file. init's check accepts
// exactly the bundles the service's trust pool loads, and names the file
// when it refuses one.
//
//	go test -run '^$' -fuzz FuzzTrustBundleCheck -fuzztime 60s ./cmd/dpsagent/
func FuzzTrustBundleCheck(f *testing.F) {
	ca, _ := birthPEM(f, "emulator CA", nil)
	f.Add(ca)
	f.Add(append(bytes.Clone(ca), ca...))
	f.Add(append([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), ca...))
	f.Add(append(bytes.Clone(ca), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	path := filepath.Join(f.TempDir(), "bundle.pem")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		initErr := checkTrustBundle(path)
		_, runErr := mqtt.TrustConfig{BundleFile: path}.Roots()
		if (initErr == nil) != (runErr == nil) {
			t.Fatalf("init says %v, the service says %v", initErr, runErr)
		}
		if initErr != nil && !strings.Contains(initErr.Error(), path) {
			t.Fatalf("init's error does not name the file: %v", initErr)
		}
	})
}

// FuzzDaemonStatus: what `dpsagent status` reads from the daemon's local API
// (net/http's response parser, the size limit, then json.Unmarshal into
// statusView), served on the real socket path, and rendered. Nothing in it
// may panic the CLI; a 200 with a JSON status renders all five sections;
// anything else is an error that says it came from the local API (or that
// no daemon runs).
//
//	go test -run '^$' -fuzz FuzzDaemonStatus -fuzztime 60s ./cmd/dpsagent/
func FuzzDaemonStatus(f *testing.F) {
	const head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
	fixtures, err := filepath.Glob("testdata/status/*.json")
	if err != nil || len(fixtures) == 0 {
		f.Fatalf("no status fixtures: %v", err)
	}
	for _, p := range fixtures {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(head + string(data)))
	}
	for _, s := range []string{
		head + `{"schema_version":1,"source":"daemon","certificate":{"not_after":"0001-01-01T00:00:00Z"},"connected":true}`,
		head + `{"last_renewal":{"path":null},"registration":{"substatus":"x"},"last_error":{"hint":null}}`,
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		"HTTP/1.1 404 Not Found\r\n\r\nno such path: /v1/status\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",
		head + "null", head + "[]", "", "garbage\r\n\r\n",
	} {
		f.Add([]byte(s))
	}

	f.Setenv("RUNTIME_DIRECTORY", "")
	cfg := &Config{}
	cfg.Advanced.StateDir = f.TempDir()
	l, err := net.Listen("unix", socketPath(cfg))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = l.Close() })
	var (
		mu     sync.Mutex
		answer []byte
	)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = http.ReadRequest(bufio.NewReader(conn))
			mu.Lock()
			_, _ = conn.Write(answer)
			mu.Unlock()
			_ = conn.Close()
		}
	}()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, resp []byte) {
		mu.Lock()
		answer = resp
		mu.Unlock()
		v, err := daemonStatus(cfg)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "local API") && !errors.Is(err, errNoDaemon) {
				t.Fatalf("the error does not say it came from the local API: %v", err)
			}
			return
		}
		var out bytes.Buffer
		renderStatus(&out, v, now)
		for _, section := range []string{"\nRegistration\n", "\nDevice\n", "\nCertificate\n", "\nRenewal\n", "\nLast error\n"} {
			if !strings.Contains(out.String(), section) {
				t.Fatalf("the screen lacks %q:\n%s", section, out.String())
			}
		}
		// --json prints what was read; it must read back the same.
		first, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("the status read does not encode: %v", err)
		}
		var back statusView
		if err := json.Unmarshal(first, &back); err != nil {
			t.Fatal(err)
		}
		if again, _ := json.Marshal(back); !bytes.Equal(again, first) {
			t.Fatalf("the status does not survive --json:\n%s\n%s", first, again)
		}
	})
}

// birthPEM makes a self-signed birth certificate for cn and its PKCS#8 key,
// as PEM; a non-nil key is reused.
func birthPEM(tb testing.TB, cn string, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte) {
	tb.Helper()
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			tb.Fatal(err)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2045, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
}
