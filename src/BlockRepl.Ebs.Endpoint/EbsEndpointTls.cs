using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace BlockRepl.Ebs.Endpoint;

/// <summary>A throwaway certificate for serving the endpoint over HTTPS on loopback.</summary>
public static class EbsEndpointTls
{
    /// <summary>
    /// A self-signed ECDSA P-256 certificate for 127.0.0.1, ::1 and localhost, valid for <paramref name="lifetime"/>
    /// (default 7 days). Clients trust it through its PEM (<see cref="ExportPem"/>), e.g. AWS_CA_BUNDLE.
    /// </summary>
    public static X509Certificate2 CreateSelfSigned(TimeSpan? lifetime = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=blockrepl ebs-endpoint", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        san.AddIpAddress(IPAddress.IPv6Loopback);
        san.AddDnsName("localhost");
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, hasPathLengthConstraint: false, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], critical: false));
        var now = DateTimeOffset.UtcNow;
        using var cert = request.CreateSelfSigned(now.AddMinutes(-5), now + (lifetime ?? TimeSpan.FromDays(7)));
        // Round-trip through PKCS#12 so the private key is usable by SslStream on every platform.
        return X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>The public certificate as PEM (what a client's CA bundle needs).</summary>
    public static string ExportPem(X509Certificate2 certificate) => certificate.ExportCertificatePem() + "\n";
}
