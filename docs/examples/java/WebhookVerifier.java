// Verify fapiao-bridge's webhook (the notification POSTed to the tenant's erp_webhook_url).
// Java 17, JDK only. Every delivery carries two header sets signed with erp_webhook_secret:
//
//   Standard Webhooks (https://www.standardwebhooks.com), checked first:
//     webhook-id         the delivery id (same on every retry: deduplicate on it)
//     webhook-timestamp  unix seconds
//     webhook-signature  "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body))
//     key = the UTF-8 bytes of erp_webhook_secret, or, for a secret "whsec_<base64>", the
//     decoded bytes (give a Standard Webhooks library "whsec_" + base64(secret bytes)).
//   Legacy (kept until a later major version):
//     X-Fapiao-Delivery, X-Fapiao-Timestamp,
//     X-Fapiao-Signature "sha256=" + hex(HMAC-SHA256(UTF-8 secret, timestamp + "." + body))
//
// Always verify the raw body bytes, before parsing them.
//
//   javac -d out FapiaoClient.java WebhookVerifier.java
//   FAPIAO_WEBHOOK_SECRET=... java -cp out WebhookVerifier 8088
//
// runs a receiver on 127.0.0.1:8088 that answers 204 to a valid notification (the bridge marks
// it delivered) and 401 to anything else (the bridge retries, then parks it).

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.time.Instant;
import java.util.Base64;
import java.util.HexFormat;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public final class WebhookVerifier {
    /** Refuse timestamps further than this from our clock: a captured request cannot be replayed. */
    public static final long TOLERANCE_SECONDS = 5 * 60;

    private final byte[] standardKey;
    private final byte[] legacyKey;

    public WebhookVerifier(String erpWebhookSecret) {
        this.legacyKey = erpWebhookSecret.getBytes(StandardCharsets.UTF_8);
        this.standardKey = standardKey(erpWebhookSecret);
    }

    private static byte[] standardKey(String secret) {
        if (secret.startsWith("whsec_")) {
            try {
                return Base64.getDecoder().decode(secret.substring("whsec_".length()));
            } catch (IllegalArgumentException notBase64) {
                // not the standard form after all: the text itself is the key
            }
        }
        return secret.getBytes(StandardCharsets.UTF_8);
    }

    /** Standard Webhooks: true when one of the header's "v1,<sig>" entries matches. */
    public boolean verify(String id, String timestamp, String signatures, byte[] body, Instant now) {
        if (id == null || timestamp == null || signatures == null || !fresh(timestamp, now)) {
            return false;
        }
        byte[] expected = hmac(standardKey, concat(
                (id + "." + timestamp + ".").getBytes(StandardCharsets.UTF_8), body));
        for (String entry : signatures.trim().split(" +")) {
            if (!entry.startsWith("v1,")) {
                continue;
            }
            byte[] presented;
            try {
                presented = Base64.getDecoder().decode(entry.substring(3));
            } catch (IllegalArgumentException notBase64) {
                continue;
            }
            if (MessageDigest.isEqual(expected, presented)) {
                return true;
            }
        }
        return false;
    }

    /** The legacy X-Fapiao-Signature. */
    public boolean verifyLegacy(String timestamp, String signature, byte[] body, Instant now) {
        if (timestamp == null || signature == null || !fresh(timestamp, now)) {
            return false;
        }
        byte[] expected = hmac(legacyKey, concat(
                (timestamp + ".").getBytes(StandardCharsets.UTF_8), body));
        String hex = "sha256=" + HexFormat.of().formatHex(expected);
        return MessageDigest.isEqual(
                hex.getBytes(StandardCharsets.US_ASCII), signature.getBytes(StandardCharsets.US_ASCII));
    }

    private static boolean fresh(String timestamp, Instant now) {
        try {
            return Math.abs(now.getEpochSecond() - Long.parseLong(timestamp)) <= TOLERANCE_SECONDS;
        } catch (NumberFormatException e) {
            return false;
        }
    }

    private static byte[] hmac(byte[] key, byte[] data) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key, "HmacSHA256"));
            return mac.doFinal(data);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e);
        }
    }

    private static byte[] concat(byte[] head, byte[] tail) {
        byte[] out = new byte[head.length + tail.length];
        System.arraycopy(head, 0, out, 0, head.length);
        System.arraycopy(tail, 0, out, head.length, tail.length);
        return out;
    }

    // ---------------------------------------------------------------- a small receiver

    public static void main(String[] args) throws IOException {
        String secret = System.getenv("FAPIAO_WEBHOOK_SECRET");
        if (args.length != 1 || secret == null || secret.isEmpty()) {
            System.err.println("usage: FAPIAO_WEBHOOK_SECRET=... java WebhookVerifier <port>");
            System.exit(64);
        }
        WebhookVerifier verifier = new WebhookVerifier(secret);
        Set<String> seen = ConcurrentHashMap.newKeySet(); // use a database table in production
        HttpServer server = HttpServer.create(
                new InetSocketAddress("127.0.0.1", Integer.parseInt(args[0])), 0);
        server.createContext("/", exchange -> receive(exchange, verifier, seen));
        server.start();
        System.out.println("listening on 127.0.0.1:" + server.getAddress().getPort());
    }

    private static void receive(HttpExchange exchange, WebhookVerifier verifier, Set<String> seen)
            throws IOException {
        byte[] body;
        try (InputStream in = exchange.getRequestBody()) {
            body = in.readAllBytes();
        }
        var headers = exchange.getRequestHeaders(); // case-insensitive
        Instant now = Instant.now();
        boolean valid;
        String id;
        if (headers.getFirst("webhook-signature") != null) {
            id = headers.getFirst("webhook-id");
            valid = verifier.verify(id, headers.getFirst("webhook-timestamp"),
                    headers.getFirst("webhook-signature"), body, now);
        } else { // a bridge older than the Standard Webhooks headers
            id = headers.getFirst("X-Fapiao-Delivery");
            valid = verifier.verifyLegacy(headers.getFirst("X-Fapiao-Timestamp"),
                    headers.getFirst("X-Fapiao-Signature"), body, now);
        }
        if (!valid) {
            System.out.println("refused: bad or missing signature");
            exchange.sendResponseHeaders(401, -1);
            exchange.close();
            return;
        }
        if (seen.add(id)) {
            // Parse the JSON body with the application's own library here (amounts are strings).
            System.out.println("accepted " + id + " " + new String(body, StandardCharsets.UTF_8));
        } else {
            System.out.println("duplicate " + id + " (already processed)");
        }
        exchange.sendResponseHeaders(204, -1);
        exchange.close();
    }
}
