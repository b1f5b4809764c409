package mqtt

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzTrustBundle feeds TrustConfig what advanced.trust_bundle_file could
// hold. It must never panic; it gives a pool or an error naming the file,
// never both; it accepts a file exactly when it holds at least one
// CERTIFICATE block and every such block parses (other blocks are skipped);
// and the certificates it reads are those blocks, in order, so writing them
// out again reads the same.
//
//	go test -run '^$' -fuzz FuzzTrustBundle -fuzztime 60s ./mqtt/
func FuzzTrustBundle(f *testing.F) {
	files, err := azureRootsFS.ReadDir("roots")
	if err != nil {
		f.Fatal(err)
	}
	var all []byte
	for _, e := range files {
		data, err := azureRootsFS.ReadFile("roots/" + e.Name())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		all = append(all, data...)
	}
	f.Add(all)
	ca, err := os.ReadFile(newTestCA(f, "emulator CA").pemFile(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ca)
	f.Add(append([]byte("# the emulator's CA\r\n"), bytes.ReplaceAll(ca, []byte("\n"), []byte("\r\n"))...))
	f.Add(append([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), ca...))
	for _, s := range []string{
		"",
		"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"\x30\x82\x01\x00garbage",
		"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
		"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
	} {
		f.Add([]byte(s))
	}
	path := filepath.Join(f.TempDir(), "bundle.pem")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		pool, err := TrustConfig{BundleFile: path}.roots(noSystemPool)
		if (pool == nil) == (err == nil) {
			t.Fatalf("roots = %v, %v: want exactly one", pool, err)
		}
		certs, perr := parseCertificates(data)
		if perr != nil && certs != nil {
			t.Fatalf("parseCertificates returned %d certificates together with %v", len(certs), perr)
		}
		// What the file holds, block by block.
		var blocks [][]byte
		allParse := true
		for rest := data; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			if b.Type == "CERTIFICATE" {
				blocks = append(blocks, b.Bytes)
				if _, err := x509.ParseCertificate(b.Bytes); err != nil {
					allParse = false
				}
			}
		}
		if wantOK := len(blocks) > 0 && allParse; wantOK != (err == nil) {
			t.Fatalf("%d CERTIFICATE blocks (all parse: %v), but roots gave %v", len(blocks), allParse, err)
		}
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("the error does not name the file: %v", err)
			}
			if !errors.Is(err, errBadCertificateBlock) && !strings.Contains(err.Error(), "-----BEGIN CERTIFICATE-----") {
				t.Fatalf("the error says neither which certificate is bad nor what the file must hold: %v", err)
			}
			return
		}
		if len(certs) != len(blocks) {
			t.Fatalf("read %d certificates from %d CERTIFICATE blocks", len(certs), len(blocks))
		}
		var again []byte
		for i, c := range certs {
			if !bytes.Equal(c.Raw, blocks[i]) {
				t.Fatalf("certificate %d is not its block's bytes", i+1)
			}
			again = append(again, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		back, err := parseCertificates(again)
		if err != nil || len(back) != len(certs) {
			t.Fatalf("the certificates written out again read as %d, %v", len(back), err)
		}
		for i := range back {
			if !back[i].Equal(certs[i]) {
				t.Fatalf("certificate %d changed when written out again", i+1)
			}
		}
	})
}

// FuzzParseEndpoint feeds ParseEndpoint what advanced.dps_endpoint could
// hold. It must never panic; it refuses with an error that quotes the
// endpoint, or gives a server name TLS can verify (a host name or an IP
// address, never white space or control characters) and the address to dial
// that host on a port from 1 to 65535. Parsing that address again gives the
// same answer.
//
//	go test -run '^$' -fuzz FuzzParseEndpoint -fuzztime 60s ./mqtt/
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{
		"global.azure-devices-provisioning.net", "dps.example:443", " 127.0.0.1:1234 ", "[::1]:9000", "[::1]", "::1",
		"", "mqtts://dps.example", "dps.example:", "dps.example:0", "dps.example:70000", "dps.example:http",
		":8883", "a b:1", "dps/x:1", "localhost:8883", "[fe80::1%eth0]:8883", "dps.example:+8883",
		"dps\t.example:8883", "dps.example\x00:8883",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, endpoint string) {
		host, addr, err := ParseEndpoint(endpoint, 8883)
		if err != nil {
			if host != "" || addr != "" {
				t.Fatalf("ParseEndpoint(%q) = %q, %q together with %v", endpoint, host, addr, err)
			}
			if strings.TrimSpace(endpoint) != "" && !strings.Contains(err.Error(), strconv.Quote(endpoint)) {
				t.Fatalf("ParseEndpoint(%q): the error does not quote the endpoint: %v", endpoint, err)
			}
			if !strings.Contains(err.Error(), "host[:port]") && !strings.Contains(err.Error(), "1 to 65535") {
				t.Fatalf("ParseEndpoint(%q): the error does not say what to write: %v", endpoint, err)
			}
			return
		}
		if host == "" || !utf8.ValidString(host) || strings.ContainsFunc(host, func(r rune) bool {
			return unicode.IsSpace(r) || unicode.IsControl(r) || r == '/' || r == '[' || r == ']'
		}) {
			t.Fatalf("ParseEndpoint(%q) gave server name %q, which no certificate can name", endpoint, host)
		}
		if strings.Contains(host, ":") && net.ParseIP(host) == nil {
			t.Fatalf("ParseEndpoint(%q) gave server name %q: a colon outside an IPv6 address", endpoint, host)
		}
		h, port, err := net.SplitHostPort(addr)
		if err != nil || h != host {
			t.Fatalf("ParseEndpoint(%q) gave address %q, which splits as %q, %v", endpoint, addr, h, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			t.Fatalf("ParseEndpoint(%q) gave port %q", endpoint, port)
		}
		h2, addr2, err := ParseEndpoint(addr, 1)
		if err != nil || h2 != host || addr2 != addr {
			t.Fatalf("ParseEndpoint(%q) = %q, %q, but ParseEndpoint(%q) = %q, %q, %v", endpoint, host, addr, addr, h2, addr2, err)
		}
	})
}
