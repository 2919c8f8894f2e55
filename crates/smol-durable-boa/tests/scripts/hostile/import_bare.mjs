export const meta = { name: "hostile", description: "a script that tries to take the host down" };
import _ from "lodash";
export default _;
