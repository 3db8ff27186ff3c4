// Hello.java: the Java binding (squall.jar), run as
//   javac -cp PREFIX/share/java/squall.jar Hello.java
//   java -cp PREFIX/share/java/squall.jar:. Hello MEMBERS
import java.nio.charset.StandardCharsets;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.squall.Entry;
import org.squall.SquallClient;
import org.squall.SquallException;
import org.squall.Watch;
import org.squall.Written;

public class Hello {
    public static void main(String[] args) throws Exception {
        try (SquallClient c = new SquallClient(args[0], 5000)) {
            Written w = c.put("/orders/8", "{\"qty\": 1}".getBytes(StandardCharsets.UTF_8));
            try {
                c.put("/orders/8", "{\"qty\": 2}".getBytes(StandardCharsets.UTF_8), w.version + 1);
            } catch (SquallException.Conflict e) {
                System.out.println("conflict: the key is at 0x" + Long.toHexString(e.currentVersion()));
            }
            Entry e = c.get("/orders/8");
            System.out.println(e.key + " " + new String(e.value, StandardCharsets.UTF_8) + " " + e.time());
            CountDownLatch removed = new CountDownLatch(1);
            try (Watch updates = c.watch("/orders/", w.version, ev -> {
                System.out.println("watch: " + ev.key + " 0x" + Long.toHexString(ev.version)
                        + (ev.deleted ? " removed" : ""));
                if (ev.deleted) {
                    removed.countDown();
                }
            })) {
                c.delete("/orders/8");
                removed.await(10, TimeUnit.SECONDS);
            }
        }
    }
}
