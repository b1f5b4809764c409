package keys_test

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/keys/keytest"
	"github.com/dpsagent/dpsagent/tpm/softkey"
)

func TestParseAlgorithm(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    keys.Algorithm
		wantErr string
	}{
		{"", keys.Auto, ""},
		{"auto", keys.Auto, ""},
		{"ECDSA-P384", keys.ECDSAP384, ""},
		{" ecdsa-p256 ", keys.ECDSAP256, ""},
		{"rsa-2048", keys.RSA2048, ""},
		{"rsa-4096", "", "use one of auto, ecdsa-p256, ecdsa-p384, rsa-2048"},
		{"p384", "", `unknown key algorithm "p384"`},
	} {
		got, err := keys.ParseAlgorithm(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseAlgorithm(%q) error = %v, want it to contain %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseAlgorithm(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestNewCSRRefusesEmptyCN(t *testing.T) {
	k, err := (&softkey.Backend{}).CreateKey(keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.NewCSR(k, ""); err == nil {
		t.Fatal("NewCSR with an empty CN succeeded")
	}
}

func TestCSRBase64HasNoArmour(t *testing.T) {
	got := keys.CSRBase64([]byte{0x30, 0x82, 0xff})
	if got != "MIL/" {
		t.Fatalf("CSRBase64 = %q, want standard base64 without line breaks", got)
	}
}

// The software backend passes the same checks as the TPM backend.
func TestSoftwareKeysSignCSRsAndTLS(t *testing.T) {
	for _, alg := range []keys.Algorithm{keys.ECDSAP256, keys.ECDSAP384, keys.RSA2048} {
		t.Run(string(alg), func(t *testing.T) {
			k, err := (&softkey.Backend{}).CreateKey(alg)
			if err != nil {
				t.Fatal(err)
			}
			keytest.CheckCSR(t, k, "gateway-001")
			if err := keytest.Handshake(t, k, tls.VersionTLS12); err != nil {
				t.Errorf("TLS 1.2: %v", err)
			}
			if keys.MaxTLSVersion(alg) == tls.VersionTLS13 {
				if err := keytest.Handshake(t, k, tls.VersionTLS13); err != nil {
					t.Errorf("TLS 1.3: %v", err)
				}
			}
		})
	}
}
