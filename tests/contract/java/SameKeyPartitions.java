import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Sends one record per key (one key per line of KEYS_FILE, UTF-8) with
 * Apache kafka-clients' default partitioner, and prints "partition TAB key"
 * for each, from the broker's acknowledgement.
 *
 * Usage: java -cp jars/*:classes SameKeyPartitions BOOTSTRAP TOPIC KEYS_FILE
 * Run by tests/it/contract.rs.
 */
public final class SameKeyPartitions {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (String key : Files.readAllLines(Path.of(args[2]), StandardCharsets.UTF_8)) {
                if (key.isEmpty()) {
                    continue;
                }
                RecordMetadata md = producer.send(new ProducerRecord<>(args[1], key, "from-java")).get();
                System.out.println(md.partition() + "\t" + key);
            }
        }
    }
}
