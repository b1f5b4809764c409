package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/dpsagent/dpsagent/tpm/keys"
)

// currentCert is what a caller of ClientTLS keeps: the certificate of the
// moment, behind a lock, swapped by a renewal.
type currentCert struct {
	mu   sync.Mutex
	cert *tls.Certificate
}

func (c *currentCert) set(cert tls.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cert = &cert
}

func (c *currentCert) get() (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert, nil
}

// serveTLS accepts connections that must present a client certificate from
// clientCA and reports each client's CN.
func serveTLS(t *testing.T, serverCA, clientCA *testCA) (addr string, peers <-chan string) {
	t.Helper()
	clients := x509.NewCertPool()
	clients.AddCert(clientCA.cert)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverCA.issue(t, "dps.test", true)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clients,
	})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 4)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if err := tc.Handshake(); err == nil {
				ch <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			} else {
				ch <- "handshake failed: " + err.Error()
			}
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	return l.Addr().String(), ch
}

// A renewal only replaces the certificate behind the callback; the next
// connection made with the same config presents the new one.
func TestClientTLSPicksUpRenewedCertificate(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	addr, peers := serveTLS(t, serverCA, clientCA)
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	var cur currentCert
	cur.set(clientCA.issue(t, "first", false))
	conf, err := ClientTLS(TLSOptions{ServerName: "127.0.0.1", Roots: roots, ClientCertificate: cur.get, KeyAlgorithm: keys.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	for _, cn := range []string{"first", "second"} {
		if cn == "second" {
			cur.set(clientCA.issue(t, "second", false))
		}
		c, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			t.Fatalf("dial presenting %s: %v", cn, err)
		}
		// TLS 1.3 completes the client's side before the server checks the
		// certificate; reading makes sure the server has done so.
		_, _ = c.Read(make([]byte, 1))
		_ = c.Close()
		if got := <-peers; got != cn {
			t.Errorf("server saw %q, want %q", got, cn)
		}
	}
}

func TestClientTLSRefusesUntrustedServer(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	addr, _ := serveTLS(t, serverCA, clientCA)
	conf, err := ClientTLS(TLSOptions{ServerName: "127.0.0.1", Roots: x509.NewCertPool()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tls.Dial("tcp", addr, conf)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("dial error %v, want an unknown authority error", err)
	}
	// And under the wrong name even with the right roots.
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	conf, _ = ClientTLS(TLSOptions{ServerName: "other.test", Roots: roots})
	_, err = tls.Dial("tcp", addr, conf)
	var hostErr x509.HostnameError
	if !errors.As(err, &hostErr) {
		t.Fatalf("dial error %v, want a host name error", err)
	}
}

func TestClientTLSSettings(t *testing.T) {
	roots := x509.NewCertPool()
	tests := []struct {
		name    string
		opts    TLSOptions
		wantMax uint16
		wantErr string
	}{
		{"ecdsa", TLSOptions{ServerName: "h", Roots: roots, KeyAlgorithm: keys.ECDSAP384}, 0, ""},
		{"no key (SAS)", TLSOptions{ServerName: "h", Roots: roots}, 0, ""},
		{"rsa caps at 1.2", TLSOptions{ServerName: "h", Roots: roots, KeyAlgorithm: keys.RSA2048}, tls.VersionTLS12, ""},
		{"no server name", TLSOptions{Roots: roots}, 0, "server name"},
		{"no roots", TLSOptions{ServerName: "h"}, 0, "trust pool"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := ClientTLS(tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one about %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if conf.MinVersion != tls.VersionTLS12 || conf.MaxVersion != tt.wantMax {
				t.Errorf("versions [%x, %x], want [%x, %x]", conf.MinVersion, conf.MaxVersion, tls.VersionTLS12, tt.wantMax)
			}
			if conf.InsecureSkipVerify || conf.RootCAs != roots || conf.ServerName != "h" {
				t.Error("verification is not set up as asked")
			}
			if (conf.GetClientCertificate != nil) != (tt.opts.ClientCertificate != nil) {
				t.Error("GetClientCertificate set without a callback, or missing with one")
			}
		})
	}
}

func TestClientTLSCallbackResults(t *testing.T) {
	roots := x509.NewCertPool()
	boom := errors.New("key unavailable")
	conf, _ := ClientTLS(TLSOptions{ServerName: "h", Roots: roots, ClientCertificate: func() (*tls.Certificate, error) { return nil, boom }})
	if _, err := conf.GetClientCertificate(nil); !errors.Is(err, boom) {
		t.Errorf("error %v, want the callback's", err)
	}
	conf, _ = ClientTLS(TLSOptions{ServerName: "h", Roots: roots, ClientCertificate: func() (*tls.Certificate, error) { return nil, nil }})
	cert, err := conf.GetClientCertificate(nil)
	if err != nil || cert == nil || len(cert.Certificate) != 0 {
		t.Errorf("nil from the callback gave %v, %v; want an empty certificate", cert, err)
	}
}

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in, host, addr string
		ok             bool
	}{
		{"global.azure-devices-provisioning.net", "global.azure-devices-provisioning.net", "global.azure-devices-provisioning.net:8883", true},
		{"dps.example:443", "dps.example", "dps.example:443", true},
		{" 127.0.0.1:1234 ", "127.0.0.1", "127.0.0.1:1234", true},
		{"[::1]:9000", "::1", "[::1]:9000", true},
		{"[::1]", "::1", "[::1]:8883", true},
		{"::1", "::1", "[::1]:8883", true},
		{"", "", "", false},
		{"mqtts://dps.example", "", "", false},
		{"dps.example:", "", "", false},
		{"dps.example:0", "", "", false},
		{"dps.example:70000", "", "", false},
		{"dps.example:http", "", "", false},
		{":8883", "", "", false},
		{"a b:1", "", "", false},
		{"dps/x:1", "", "", false},
	}
	for _, tt := range tests {
		host, addr, err := ParseEndpoint(tt.in, 8883)
		if (err == nil) != tt.ok || host != tt.host || addr != tt.addr {
			t.Errorf("ParseEndpoint(%q) = %q, %q, %v; want %q, %q, ok=%v", tt.in, host, addr, err, tt.host, tt.addr, tt.ok)
		}
	}
}

// A server that asks for a certificate when the caller has none to give (SAS
// devices) gets an empty one rather than a failed handshake.
func TestClientTLSWithoutCertificateAgainstRequestingServer(t *testing.T) {
	serverCA := newTestCA(t, "server CA")
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverCA.issue(t, "dps.test", true)},
		ClientAuth:   tls.RequestClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- c.(*tls.Conn).Handshake()
	}()
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	conf, _ := ClientTLS(TLSOptions{ServerName: "dps.test", Roots: roots})
	c, err := tls.Dial("tcp", l.Addr().String(), conf)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	if err := <-done; err != nil {
		t.Errorf("server handshake: %v", err)
	}
}
