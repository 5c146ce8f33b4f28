import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;

/**
 * Exits 0 once the broker answers a metadata request (describeCluster), 1 if it
 * does not within the deadline. Run as a single-file source program by ops/kafka/start.
 * Usage: java -cp 'lib/*' WaitReady.java BOOTSTRAP TIMEOUT_SECONDS
 */
public class WaitReady {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        String last = "no answer";
        try (Admin admin = Admin.create(props)) {
            while (System.nanoTime() < deadline) {
                try {
                    int nodes = admin.describeCluster(new DescribeClusterOptions().timeoutMs(3000))
                            .nodes().get(4, TimeUnit.SECONDS).size();
                    if (nodes > 0) {
                        System.out.println("kafka: metadata answered by " + nodes + " broker(s) at " + bootstrap);
                        return;
                    }
                } catch (Exception e) {
                    last = e.getClass().getSimpleName() + ": " + e.getMessage();
                }
                Thread.sleep(500);
            }
        }
        System.err.println("kafka: no metadata answer from " + bootstrap + " (" + last + ")");
        System.exit(1);
    }
}
