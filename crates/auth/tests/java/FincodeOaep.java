import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.spec.PKCS8EncodedKeySpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.Base64;
import javax.crypto.Cipher;

/**
 * FinCode's side of the login password encryption, as its payload-encryption guide writes it:
 * {@code Cipher.getInstance("RSA/ECB/OAEPWithSHA-256AndMGF1Padding")} with the JDK's default
 * provider and no parameter spec. The tests use it as an independent implementation: whatever
 * this program decrypts, FinCode's Java server decrypts, and the other way round.
 *
 * <pre>
 *   java FincodeOaep.java decrypt PRIVATE_KEY_PKCS8.pem CIPHERTEXT_BASE64   (prints the plaintext)
 *   java FincodeOaep.java encrypt PUBLIC_KEY.b64 PLAINTEXT                  (prints base64)
 * </pre>
 *
 * PUBLIC_KEY.b64 is the bare Base64 of the DER SubjectPublicKeyInfo, the form FinCode's
 * dashboard hands out. A decryption failure exits non-zero (BadPaddingException).
 */
public class FincodeOaep {
    private static final String TRANSFORMATION = "RSA/ECB/OAEPWithSHA-256AndMGF1Padding";

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: FincodeOaep (decrypt KEY.pem CIPHERTEXT_B64 | encrypt KEY.b64 PLAINTEXT)");
            System.exit(2);
        }
        KeyFactory rsa = KeyFactory.getInstance("RSA");
        Cipher cipher = Cipher.getInstance(TRANSFORMATION);
        switch (args[0]) {
            case "decrypt": {
                PrivateKey key = rsa.generatePrivate(new PKCS8EncodedKeySpec(pemBody(args[1])));
                // No OAEPParameterSpec, exactly as in FinCode's guide.
                cipher.init(Cipher.DECRYPT_MODE, key);
                byte[] plain = cipher.doFinal(Base64.getDecoder().decode(args[2].trim()));
                System.out.print(new String(plain, StandardCharsets.UTF_8));
                break;
            }
            case "encrypt": {
                byte[] der = Base64.getMimeDecoder().decode(Files.readString(Path.of(args[1])).trim());
                PublicKey key = rsa.generatePublic(new X509EncodedKeySpec(der));
                cipher.init(Cipher.ENCRYPT_MODE, key);
                // For the record: what the default provider actually chose.
                System.err.println(cipher.getProvider().getName() + " " + cipher.getParameters());
                byte[] sealed = cipher.doFinal(args[2].getBytes(StandardCharsets.UTF_8));
                System.out.print(Base64.getEncoder().encodeToString(sealed));
                break;
            }
            default:
                System.err.println("unknown mode " + args[0]);
                System.exit(2);
        }
    }

    /** The DER inside a PEM file: the Base64 between the armour lines. */
    private static byte[] pemBody(String file) throws Exception {
        StringBuilder body = new StringBuilder();
        for (String line : Files.readAllLines(Path.of(file))) {
            if (!line.startsWith("-----")) {
                body.append(line.trim());
            }
        }
        return Base64.getDecoder().decode(body.toString());
    }
}
