package pki_test

import (
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/emulator/pki"
)

func TestIssuedChainVerifies(t *testing.T) {
	ca := openDeviceCA(t, t.TempDir(), &clock{testNow})
	for _, tc := range []struct {
		name string
		key  func(testing.TB) crypto.Signer
	}{
		{"ecdsa-p256", func(t testing.TB) crypto.Signer { return ecKey(t, elliptic.P256()) }},
		{"ecdsa-p384", func(t testing.TB) crypto.Signer { return ecKey(t, elliptic.P384()) }},
		{"rsa-2048", func(t testing.TB) crypto.Signer { return rsaKey(t, 2048) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr := parsedCSR(t, tc.key(t), "gateway-001")
			ders, err := ca.Issue(csr, pki.IssueOptions{DeviceID: "gateway-001", Lifetime: 7 * 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			chain := parseChain(t, ders)
			if len(chain) != 3 || !chain[1].Equal(ca.Issuing()) || !chain[2].Equal(ca.Root()) {
				t.Fatalf("chain is not leaf, issuing, root")
			}
			leaf := chain[0]
			roots, inter := x509.NewCertPool(), x509.NewCertPool()
			roots.AddCert(chain[2])
			inter.AddCert(chain[1])
			verified, err := leaf.Verify(x509.VerifyOptions{
				Roots: roots, Intermediates: inter, CurrentTime: testNow,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})
			if err != nil {
				t.Fatalf("x509 verify: %v", err)
			}
			if got := verified[0]; len(got) != 3 || !got[1].Equal(chain[1]) || !got[2].Equal(chain[2]) {
				t.Errorf("verified path is not leaf, issuing, root")
			}
			checkLeaf(t, leaf, csr, ca)
		})
	}
}

func checkLeaf(t *testing.T, leaf *x509.Certificate, csr *x509.CertificateRequest, ca *pki.DeviceCA) {
	t.Helper()
	if leaf.Subject.CommonName != "gateway-001" {
		t.Errorf("CN %q", leaf.Subject.CommonName)
	}
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(csr.PublicKey) {
		t.Error("the leaf does not hold the CSR's public key")
	}
	if leaf.IsCA {
		t.Error("the leaf is a CA")
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %b, want digitalSignature only", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("EKU %v, want clientAuth only", leaf.ExtKeyUsage)
	}
	if leaf.SignatureAlgorithm != x509.ECDSAWithSHA384 {
		t.Errorf("signed with %s, want ECDSA-SHA384", leaf.SignatureAlgorithm)
	}
	if len(leaf.SubjectKeyId) == 0 || string(leaf.AuthorityKeyId) != string(ca.Issuing().SubjectKeyId) {
		t.Errorf("SKI %x, AKI %x (issuing SKI %x)", leaf.SubjectKeyId, leaf.AuthorityKeyId, ca.Issuing().SubjectKeyId)
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.Cmp(new(big.Int).Lsh(big.NewInt(1), 128)) >= 0 {
		t.Errorf("serial %x is not a positive 128-bit number", leaf.SerialNumber)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got != 7*24*time.Hour {
		t.Errorf("validity spans %s, want 168h", got)
	}
}

func TestIssueSerialsDiffer(t *testing.T) {
	ca := openDeviceCA(t, t.TempDir(), &clock{testNow})
	seen := map[string]bool{}
	for range 50 {
		s := issue(t, ca, pki.IssueOptions{DeviceID: "gw"})[0].SerialNumber.String()
		if seen[s] {
			t.Fatalf("serial %s issued twice", s)
		}
		seen[s] = true
	}
}

func TestShortLifetimeIsValidRightAfterIssue(t *testing.T) {
	c := &clock{testNow}
	ca := openDeviceCA(t, t.TempDir(), c)
	chain := issue(t, ca, pki.IssueOptions{DeviceID: "demo-1", Lifetime: 20 * time.Second})
	for _, tc := range []struct {
		after time.Duration
		ok    bool
	}{{0, true}, {10 * time.Second, true}, {17 * time.Second, true}, {19 * time.Second, false}} {
		_, err := ca.VerifyClient(chain, testNow.Add(tc.after))
		if tc.ok && err != nil {
			t.Errorf("%s after issue: refused: %v", tc.after, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("%s after issue: accepted, want expired", tc.after)
		}
	}
}

func TestIssueRefuses(t *testing.T) {
	ca := openDeviceCA(t, t.TempDir(), &clock{testNow})
	csr := parsedCSR(t, ecKey(t, elliptic.P256()), "gw")
	for _, tc := range []struct {
		name    string
		csr     *x509.CertificateRequest
		opts    pki.IssueOptions
		wantErr string
	}{
		{"no CSR", nil, pki.IssueOptions{DeviceID: "gw"}, "no CSR"},
		{"no device ID", csr, pki.IssueOptions{}, "no device ID"},
		{"under a second", csr, pki.IssueOptions{DeviceID: "gw", Lifetime: 500 * time.Millisecond}, "minimum"},
		{"negative", csr, pki.IssueOptions{DeviceID: "gw", Lifetime: -time.Hour}, "minimum"},
		{"outlives the issuing CA", csr, pki.IssueOptions{DeviceID: "gw", Lifetime: 11 * 365 * 24 * time.Hour}, "after the issuing CA expires"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.Issue(tc.csr, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Issue = %v, want an error mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestIssueDefaultLifetime(t *testing.T) {
	ca := openDeviceCA(t, t.TempDir(), &clock{testNow})
	leaf := issue(t, ca, pki.IssueOptions{DeviceID: "gw"})[0]
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got != pki.DefaultLifetime {
		t.Fatalf("default lifetime %s, want %s", got, pki.DefaultLifetime)
	}
}
