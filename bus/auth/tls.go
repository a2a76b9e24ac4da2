package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// TLSDir is where an installation keeps its CA and server certificates
// (<root>/tls). Clients find ca.pem there, beside creds/.
const TLSDir = "tls"

// TLSFiles are a server's certificate, its key and the CA that signed it.
type TLSFiles struct{ Cert, Key, CA string }

// CAPath is <root>/tls/ca.pem.
func CAPath(root string) string { return filepath.Join(root, TLSDir, "ca.pem") }

// EnsureTLS makes (on first use) a CA in <root>/tls and a server
// certificate for name, valid for localhost, 127.0.0.1, ::1, the hostname
// and sans; a certificate that lacks one of those is made again. ECDSA
// P-256; the server certificate also serves as the client certificate of
// cluster routes.
func EnsureTLS(root, name string, sans []string) (TLSFiles, error) {
	dir := filepath.Join(root, TLSDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return TLSFiles{}, err
	}
	caCert, caKey, err := loadOrMakeCA(dir)
	if err != nil {
		return TLSFiles{}, err
	}
	f := TLSFiles{Cert: filepath.Join(dir, "server-"+name+".pem"), Key: filepath.Join(dir, "server-"+name+"-key.pem"), CA: CAPath(root)}
	hosts := serverHosts(sans)
	if c, err := readCert(f.Cert); err == nil && coversAll(c, hosts) && time.Until(c.NotAfter) > 30*24*time.Hour {
		return f, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return TLSFiles{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"Stoker"}, CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(2 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return TLSFiles{}, err
	}
	if err := writePEM(f.Key, "EC PRIVATE KEY", mustMarshalEC(key), 0o600); err != nil {
		return TLSFiles{}, err
	}
	if err := writePEM(f.Cert, "CERTIFICATE", der, 0o644); err != nil {
		return TLSFiles{}, err
	}
	return f, nil
}

// serverHosts is localhost, the loopback addresses, the hostname and sans.
func serverHosts(sans []string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	for _, s := range sans {
		if s != "" && s != "0.0.0.0" && s != "::" && !slices.Contains(hosts, s) {
			hosts = append(hosts, s)
		}
	}
	return hosts
}

func coversAll(c *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if c.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func loadOrMakeCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if c, err := readCert(certPath); err == nil {
		b, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, nil, fmt.Errorf("CA key: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, nil, fmt.Errorf("%s: no PEM block", keyPath)
		}
		k, err := x509.ParseECPrivateKey(blk.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
		}
		return c, k, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"Stoker"}, CommonName: "Stoker CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := writePEM(keyPath, "EC PRIVATE KEY", mustMarshalEC(key), 0o600); err != nil {
		return nil, nil, err
	}
	if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	return x509.ParseCertificate(blk.Bytes)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func mustMarshalEC(k *ecdsa.PrivateKey) []byte {
	b, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	return b
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

// ServerTLS is the TLS configuration for client connections: the server's
// certificate (clients authenticate with their JWT, not a certificate).
func ServerTLS(f TLSFiles) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// RouteTLS is the TLS configuration for cluster routes: mutual TLS with
// the CA as both RootCAs and ClientCAs (without RootCAs routes never form
// and nothing says so: SECURITY-NOTES trap 10), so only nodes holding a
// certificate from this CA join.
func RouteTLS(f TLSFiles) (*tls.Config, error) {
	c, err := ServerTLS(f)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no certificate", f.CA)
	}
	c.RootCAs, c.ClientCAs = pool, pool
	c.ClientAuth = tls.RequireAndVerifyClientCert
	return c, nil
}
