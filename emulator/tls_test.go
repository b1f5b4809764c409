package emulator

import (
	"crypto/tls"
	"net"
	"testing"
)

// The DPS and hub listeners speak TLS 1.2 or later only, and ask every client
// for a certificate (optional: SAS devices have none), which X.509
// attestation and hub authentication need.
func TestFrontEndsTLS(t *testing.T) {
	_, ep := startTestEmulator(t, nil)
	roots := dpsRoots(t, ep)
	for name, addr := range map[string]string{"DPS": ep.DPS, "hub": ep.Hubs["hub1"].Address} {
		for _, tc := range []struct {
			version uint16
			ok      bool
		}{
			{tls.VersionTLS11, false},
			{tls.VersionTLS12, true},
			{tls.VersionTLS13, true},
		} {
			asked := false
			conf := &tls.Config{
				RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tc.version, MaxVersion: tc.version,
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					asked = true
					return &tls.Certificate{}, nil // none, as a SAS device
				},
			}
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: lifecycleWait}, "tcp", addr, conf)
			if err == nil {
				// TLS 1.3 sends the certificate request with the server's
				// first flight; reading completes the handshake on our side.
				err = c.Handshake()
				c.Close()
			}
			switch {
			case tc.ok && err != nil:
				t.Errorf("%s, %s: %v", name, tls.VersionName(tc.version), err)
			case !tc.ok && err == nil:
				t.Errorf("%s accepted %s; the minimum is TLS 1.2", name, tls.VersionName(tc.version))
			case tc.ok && !asked:
				t.Errorf("%s, %s: the server did not ask for a client certificate", name, tls.VersionName(tc.version))
			}
		}
	}
}
