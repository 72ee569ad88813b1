// Submit an ERP document to fapiao-bridge (POST /v1/documents) and print the answer.
// Java 17, JDK only (java.net.http). No JSON library is needed: the document is sent as the
// bytes of the file, unchanged, so amounts keep every digit the ERP wrote.
//
//   javac -d out FapiaoClient.java WebhookVerifier.java
//   FAPIAO_URL=http://127.0.0.1:8000 FAPIAO_API_KEY=... java -cp out FapiaoClient ../document.json
//
// Exit status: 0 when the bridge accepted the document (200/202), 2 when it refused it
// (4xx: the body says why, with issues[] for a 422), 3 for a server or network failure
// (retry later with the same document: submitting identical content again is safe).

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

public final class FapiaoClient {
    private final HttpClient http;
    private final URI documents;
    private final String apiKey;

    public FapiaoClient(String baseUrl, String apiKey) {
        this.http = HttpClient.newBuilder()
                // HTTP/1.1, not the default HTTP/2: over plain http:// the JDK would offer an
                // "Upgrade: h2c", and uvicorn with httptools drops the body of such a request
                // (Kludex/uvicorn#2722), which the bridge answers 400 "the body is empty".
                .version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(Duration.ofSeconds(10))
                .build();
        this.documents = URI.create(baseUrl.replaceAll("/+$", "") + "/v1/documents");
        this.apiKey = apiKey;
    }

    /** POST one document, an array of documents, or {"documents": [...]} (UTF-8 JSON). */
    public HttpResponse<String> submit(byte[] json) throws IOException, InterruptedException {
        HttpRequest request = HttpRequest.newBuilder(documents)
                .timeout(Duration.ofSeconds(60))
                .header("Authorization", "Bearer " + apiKey)
                .header("Content-Type", "application/json; charset=utf-8")
                .header("Accept", "application/json")
                .POST(HttpRequest.BodyPublishers.ofByteArray(json))
                .build();
        return http.send(request, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: java FapiaoClient <document.json>"
                    + "  (env FAPIAO_URL, FAPIAO_API_KEY)");
            System.exit(64);
        }
        String baseUrl = System.getenv().getOrDefault("FAPIAO_URL", "http://127.0.0.1:8000");
        String apiKey = System.getenv().getOrDefault("FAPIAO_API_KEY", "");
        byte[] document = Files.readAllBytes(Path.of(args[0]));

        HttpResponse<String> answer;
        try {
            answer = new FapiaoClient(baseUrl, apiKey).submit(document);
        } catch (IOException e) {
            System.err.println("no answer from " + baseUrl + ": " + e);
            System.exit(3);
            return;
        }
        int status = answer.statusCode();
        System.out.println("HTTP " + status);
        System.out.println(answer.body());
        // 202 accepted (push owed), 200 identical content accepted before, 207 a batch with
        // per-item results[i].status_code; 422 invalid, 409 conflict, 401 wrong key ...
        if (status == 200 || status == 202 || status == 207) {
            System.exit(0);
        }
        System.exit(status >= 500 ? 3 : 2);
    }
}
